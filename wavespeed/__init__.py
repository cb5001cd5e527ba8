"""wavespeed: a thread-based worker SDK for serverless GPU platforms.

Importing this package has no side effects: it reads no environment, starts
no thread and configures no logging. See ``wavespeed.serverless``.
"""

# 1.x continues the worker line of wavespeed 1.0 (last release 1.0.14), so
# the ``wavespeed>=1,<2`` pins worker images carry install this package.
__version__ = "1.1.0"

#: The runpod-python release whose worker protocol and surface this package
#: speaks. It is what a platform sees as ``runpod_version`` (the heartbeat,
#: error payloads) and what the compatibility layer answers as
#: ``runpod.__version__``; wavespeed's own version travels as
#: ``wavespeed_version``.
RUNPOD_VERSION = "1.12.0"
