"""``runpod.serverless.utils.rp_validator``: ``validate(input, schema)``.

The same names as wavespeed 1.0's ``wavespeed.serverless.utils.validator``
(whose constants already have runpod's names), under runpod's path.
"""

from wavespeed.serverless.utils import validator as _validator
from wavespeed.serverless.utils.validator import *  # noqa: F403 - all of it, nothing more

__all__ = list(_validator.__all__)
