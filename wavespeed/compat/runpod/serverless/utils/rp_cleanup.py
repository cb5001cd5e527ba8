"""``runpod.serverless.utils.rp_cleanup``: ``clean(folder_list)``."""

from wavespeed.serverless.utils.cleanup import clean

__all__ = ["clean"]
