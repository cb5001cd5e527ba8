"""A job's outbox: its chunks, progress updates and final result, in order.

The runner (a pool thread, or the shared loop through ``asend_chunk``) and
``progress_update`` put messages in; ``delivery.Delivery`` takes them out,
one thread per outbox at a time, so a job's messages keep their order while
different jobs send in parallel. The final result is last.

The outbox is bounded by count and bytes: a generator that yields faster
than the platform takes chunks waits (a sync generator blocks its thread,
an async one awaits) until there is room. Progress updates never wait:
while the outbox is full, a queued, unsent update is replaced by a newer one.
"""

import enum
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Optional

from .job import Job, JobResult, encode
from .logs import logger
from .runner import Channel

if TYPE_CHECKING:
    from .delivery import Delivery

log = logger("delivery")

MAX_ITEMS = 64
MAX_BYTES = 16 * 1024 * 1024


class Kind(enum.Enum):
    CHUNK = "chunk"
    PROGRESS = "progress"
    FINAL = "final"


class FinalState(enum.Enum):
    NONE = "none"  # no final result yet
    QUEUED = "queued"
    SENDING = "sending"
    SPOOLED = "spooled"  # spooled at the shutdown deadline while queued or sending
    DONE = "done"


class FinalOutcome(enum.Enum):
    """What became of a final result."""

    DELIVERED = "delivered"
    REPLACED = "replaced"  # refused; the FAILED result that says why was delivered
    SPOOLED = "spooled"
    DROPPED = "dropped"  # refused twice, or the disk refused the spool; logged as an error
    DISCARDED = "discarded"  # nothing to post (cancelled by the platform)


class Message:
    __slots__ = ("kind", "payload", "result", "size")

    def __init__(self, kind: Kind, payload: bytes, result: Optional[JobResult] = None) -> None:
        self.kind = kind
        self.payload = payload
        self.result = result
        self.size = len(payload)


Done = Callable[[JobResult, FinalOutcome], None]


class Outbox(Channel):
    """One job's ordered messages. A ``Channel`` for the runner, fed by any thread."""

    def __init__(
        self,
        job_id: str,
        delivery: "Delivery",
        max_items: int = MAX_ITEMS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        self.job_id = job_id
        self._delivery = delivery
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.cond = threading.Condition()
        self.queue: deque[Message] = deque()
        self.bytes = 0
        self.scheduled = False  # a thread is draining this outbox
        self.closed = False  # the final result (or a discard) is in: nothing more is taken
        self.final_state = FinalState.NONE
        self.final: Optional[JobResult] = None
        self.final_at = 0.0
        self.on_done: Optional[Done] = None
        self.spool_path: Optional[str] = None
        self.finished = False  # finish() has run (under ``cond``)
        self._async_waiters: list[tuple[Any, Any]] = []

    # -- producers (the runner, progress_update) -----------------------------------

    def _room(self) -> bool:
        return not self.queue or (len(self.queue) < self.max_items and self.bytes < self.max_bytes)

    def _append(self, message: Message) -> None:
        self.queue.append(message)
        self.bytes += message.size

    def send_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        with self.cond:
            while not self.closed and not self._room():
                self.cond.wait()
            if self.closed:
                log.debug("stream chunk of job %s after its final result; dropped", self.job_id)
                return
            self._append(Message(Kind.CHUNK, payload))
        self._delivery.schedule(self)

    async def asend_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        import asyncio

        loop = asyncio.get_running_loop()
        while True:
            with self.cond:
                if self.closed:
                    log.debug("stream chunk of job %s after its final result; dropped", self.job_id)
                    return
                if self._room():
                    self._append(Message(Kind.CHUNK, payload))
                    break
                waiter = loop.create_future()
                self._async_waiters.append((loop, waiter))
            await waiter
        self._delivery.schedule(self)

    def send_progress(self, job: Job, data: Any) -> None:
        payload = encode({"status": "IN_PROGRESS", "output": data})
        with self.cond:
            if self.closed:
                log.debug("progress_update after the final result of job %s; dropped", self.job_id)
                return
            last = self.queue[-1] if self.queue else None
            if not self._room() and last is not None and last.kind is Kind.PROGRESS:
                self.bytes -= last.size  # full: the newer update replaces an unsent one
                self.queue.pop()
            self._append(Message(Kind.PROGRESS, payload))
        self._delivery.schedule(self)

    def close(self, result: Optional[JobResult], on_done: Done, inline: bool = False) -> None:
        """Queue the final result (None: post nothing, drop what is queued).

        ``on_done(result, outcome)`` runs once the result has left: delivered,
        replaced, spooled or dropped. With ``inline`` the calling thread
        sends it when nothing else is queued (a pool thread; never the loop).
        """
        with self.cond:
            if self.closed:
                return
            self.closed = True
            self.on_done = on_done
            self._release_waiters()
            if result is None:
                self.queue.clear()
                self.bytes = 0
            else:
                self.final = result
                self.final_at = time.monotonic()
                self.final_state = FinalState.QUEUED
                self._append(Message(Kind.FINAL, result.payload, result))
        if result is None:
            self._delivery.finish(
                self, JobResult(self.job_id, {}, b"", cancelled=True), FinalOutcome.DISCARDED
            )
            return
        self._delivery.schedule(self, inline=inline)

    # -- the delivery side -------------------------------------------------------------

    def _release_waiters(self) -> None:
        """Wake producers waiting for room (called with ``cond`` held)."""
        self.cond.notify_all()
        waiters, self._async_waiters = self._async_waiters, []
        for loop, waiter in waiters:
            try:
                loop.call_soon_threadsafe(_resolve, waiter)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

    def pop(self) -> Optional[Message]:
        """The next message to send, or None (and the outbox is unscheduled)."""
        with self.cond:
            if not self.queue:
                self.scheduled = False
                return None
            message = self.queue.popleft()
            self.bytes -= message.size
            if message.kind is Kind.FINAL:
                self.final_state = FinalState.SENDING
            self._release_waiters()
            return message


def _resolve(waiter: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)
