"""``runpod.serverless.utils.rp_cuda``: ``is_available()`` without torch."""

from wavespeed.serverless.utils.cuda import device_count, is_available

__all__ = ["is_available", "device_count"]
