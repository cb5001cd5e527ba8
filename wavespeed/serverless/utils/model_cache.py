"""Where a Hugging Face repository lives in RunPod's model cache (runpod's ``rp_model_cache``).

``"org/model:revision"`` (revision ``main`` when absent or empty) becomes
``path_template.format(model=..., revision=...)``, by default
``/runpod/cache/org/model/revision``. A string with no model name gives
None (with a warning), so a list of repositories can be filtered without
try/except.
"""

from typing import Optional

from ..logs import ensure_handler, logger

__all__ = [
    "model_cache_path",
    "resolve_model_cache_path_from_hugginface_repository",
    "DEFAULT_TEMPLATE",
]

log = logger("utils.model_cache")

DEFAULT_TEMPLATE = "/runpod/cache/{model}/{revision}"


def model_cache_path(
    huggingface_repository: str, /, path_template: str = DEFAULT_TEMPLATE
) -> Optional[str]:
    """The cache path of ``"org/model[:revision]"``, or None when it names no model."""
    model, _, revision = huggingface_repository.rpartition(":")
    if not _:
        model, revision = huggingface_repository, ""
    if not model:
        ensure_handler()  # often called at import time, before start()
        log.warning('Unable to resolve the model-cache path for "%s"', huggingface_repository)
        return None
    return path_template.format(model=model, revision=revision or "main")


#: runpod's name (its spelling).
resolve_model_cache_path_from_hugginface_repository = model_cache_path
