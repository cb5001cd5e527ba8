"""``runpod.serverless.utils.rp_volume_cache``: ``VolumeCache``, a warm cache of
model folders on a network volume (see ``wavespeed.serverless.utils.volume_cache``)."""

from wavespeed.serverless.utils.volume_cache import VolumeCache

__all__ = ["VolumeCache"]
