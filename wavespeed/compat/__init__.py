"""Run workers written for runpod-python on wavespeed, unmodified.

``wavespeed/compat/runpod`` is a package tree that answers to runpod's
module paths (``runpod``, ``runpod.serverless``,
``runpod.serverless.utils.rp_validator``, ...), each a thin alias of
``wavespeed.serverless``. ``python -m wavespeed.run handler.py`` puts the
folder returned by ``layer_path()`` first on ``sys.path`` for that process
only, so ``import runpod`` finds the layer (see ``wavespeed.run``).

Nothing here is imported by ``wavespeed.serverless``; importing this
package does nothing but define ``layer_path``.
"""

import os

__all__ = ["layer_path"]


def layer_path() -> str:
    """The folder to put on ``sys.path`` so that ``import runpod`` finds the layer."""
    return os.path.dirname(os.path.abspath(__file__))
