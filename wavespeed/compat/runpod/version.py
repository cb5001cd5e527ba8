"""``runpod.version``: the runpod-python release whose worker surface the layer speaks.

``runpod.__version__`` is exactly ``"1.12.0"``, as runpod's own is: a
platform or a worker may gate behaviour on it. wavespeed's version is
``wavespeed.__version__`` (sent to platforms as ``wavespeed_version``).
"""

from wavespeed import RUNPOD_VERSION

__all__ = ["get_version", "__version__"]

__version__ = RUNPOD_VERSION


def get_version() -> str:
    """The runpod-python version this layer stands in for."""
    return RUNPOD_VERSION
