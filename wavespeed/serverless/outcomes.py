"""What the transport's calls return: every outcome is an enum member.

A consumer branches on ``kind`` / ``outcome`` and ends with a branch that
raises on any other value, so a new member cannot be mishandled silently.
"""

import enum
from dataclasses import dataclass, field
from typing import Any, Optional


class TakeKind(enum.Enum):
    """What one job-take brought. A consumer's last branch must raise on any other value."""

    JOBS = "jobs"  # ``jobs`` to run and/or ``malformed`` ids to report FAILED
    EMPTY = "empty"  # nothing to do: 204, 400 (FlashBoot), an empty or unreadable body
    THROTTLED = "throttled"  # 429: wait at least ``retry_after`` (None: not given)
    ERROR = "error"  # no usable answer (network, 3xx, other 4xx, 5xx): back off


class Outcome(enum.Enum):
    """What happened to a POST. A consumer's last branch must raise on any other value."""

    DELIVERED = "delivered"  # answered 2xx
    REFUSED = "refused"  # 3xx, or 4xx other than 429, or no URL: retrying cannot help
    FAILED = "failed"  # no try succeeded before the deadline, or the posts were aborted


class CancelKind(enum.Enum):
    """What one poll of the job-stop (cancel) channel brought.

    A consumer's last branch must raise on any other value.
    """

    NO_URL = "no_url"  # there is no channel (the job-take URL has no ``/job-take/``)
    ERROR = "error"  # the request failed or its answer was unusable: ``detail``
    NONE = "none"  # nothing to cancel
    JOBS = "jobs"  # ``ids``: cancel these jobs


@dataclass
class TakeResult:
    """What one job-take returned."""

    kind: TakeKind
    jobs: list[dict[str, Any]] = field(default_factory=list)
    malformed: list[tuple[str, str]] = field(default_factory=list)  # (job id, why)
    retry_after: Optional[float] = None
    detail: str = ""


@dataclass(frozen=True)
class Delivery:
    """What happened to a POST: its outcome, the last HTTP status, why, and the tries made."""

    outcome: Outcome
    status: Optional[int] = None
    detail: str = ""
    tries: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.DELIVERED

    @property
    def refused(self) -> bool:
        return self.outcome is Outcome.REFUSED


@dataclass(frozen=True)
class CancelPoll:
    """What one poll of the job-stop channel returned."""

    kind: CancelKind
    ids: list[str] = field(default_factory=list)
    detail: str = ""
