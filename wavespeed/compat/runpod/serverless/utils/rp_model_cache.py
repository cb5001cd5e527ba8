"""``runpod.serverless.utils.rp_model_cache``: the model-cache path of a Hugging Face repository."""

from wavespeed.serverless.utils.model_cache import (
    resolve_model_cache_path_from_hugginface_repository,
)

__all__ = ["resolve_model_cache_path_from_hugginface_repository"]
