"""``runpod.serverless.modules.rp_progress.progress_update``."""

from wavespeed.serverless import progress_update

__all__ = ["progress_update"]
