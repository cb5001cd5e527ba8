"""``wavespeed.serverless.utils.validator``: wavespeed 1.0's module path for ``validate``.

The same function as ``wavespeed.serverless.utils.validate`` (runpod's rules
and messages), with 1.0's message constants.
"""

from .validation import (
    CONSTRAINTS_FAILED as CONSTRAINTS_ERROR,
    MISSING_DEFAULT as MISSING_DEFAULT_ERROR,
    MISSING_REQUIRED as MISSING_REQUIRED_ERROR,
    MISSING_TYPE as MISSING_TYPE_ERROR,
    RULES_NOT_A_DICT as SCHEMA_ERROR,
    UNEXPECTED_INPUT as UNEXPECTED_INPUT_ERROR,
    WRONG_TYPE as INVALID_TYPE_ERROR,
    validate,
)

__all__ = [
    "validate",
    "UNEXPECTED_INPUT_ERROR",
    "MISSING_REQUIRED_ERROR",
    "MISSING_DEFAULT_ERROR",
    "MISSING_TYPE_ERROR",
    "INVALID_TYPE_ERROR",
    "CONSTRAINTS_ERROR",
    "SCHEMA_ERROR",
]
