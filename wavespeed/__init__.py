"""wavespeed: a thread-based worker SDK for serverless GPU platforms.

Importing this package has no side effects: it reads no environment, starts
no thread and configures no logging. See ``wavespeed.serverless``.
"""

__version__ = "0.1.0"
