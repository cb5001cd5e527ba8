"""The version the layer reports as ``runpod.__version__``.

It is the runpod-python release whose worker surface the layer follows,
with wavespeed's version as the local part, so version checks such as
``Version(runpod.__version__) >= Version("1.7")`` still pass.
"""

from wavespeed import __version__ as _wavespeed_version

RUNPOD_API_VERSION = "1.12.0"
__version__ = f"{RUNPOD_API_VERSION}+wavespeed.{_wavespeed_version}"


def get_version() -> str:
    return __version__
