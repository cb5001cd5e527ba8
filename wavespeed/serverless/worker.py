"""The worker: take jobs from the platform, run them in the engine, deliver every result.

The data path, top to bottom:

    fetcher (Role) ──take──▶ Engine ──run (Runner)──▶ Outbox ──▶ Delivery ──▶ platform
         ▲                                                          │
         └─────────── the result has left: the slot frees ◀─────────┘

What the worker itself does: fetching (one ``step`` per turn: wait for a
free slot, ask for that many jobs, admit them; under steady load the engine
has the thread that has just delivered a result make the same take through
``_feed`` instead), the thread roles and their supervision, the stop order,
and ``/health``. Running jobs, the
one-final-result rule and timeouts live in ``engine``; posting, retries,
refusals and the spool in ``delivery``.
"""

import random
import threading
import time
from collections.abc import Iterable
from typing import Any, Callable, Optional

from .config import Config
from .delivery import Delivery, FinalOutcome, Stats
from .engine import Engine, JobRun
from .health import HealthServer
from .heartbeat import Heartbeat
from .job import Job, JobResult, failure
from .logs import logger
from .metrics import create_metrics
from .roles import Role, Supervisor
from .spool import Resender, Spool
from .transport import CancelKind, TakeKind, TakeResult, Transport

log = logger("worker")

# How long results may still take to leave after the drain deadline before
# they are spooled; with the steps around it, exit comes within drain + 5 s.
DELIVERY_GRACE = 3.0
# How long stop() lets a job-take in flight finish before cutting it.
FETCH_GRACE = 0.25
# A thread role whose turn failed this many times in a row makes /health unhealthy.
FAILING_AFTER = 3


class Backoff:
    """Exponential backoff with jitter, separate for empty answers and errors."""

    def __init__(
        self,
        base: float = 0.05,
        empty_cap: float = 1.0,
        error_cap: float = 30.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.base = base
        self.empty_cap = empty_cap
        self.error_cap = error_cap
        self._rand = rand
        self._empties = 0
        self._errors = 0

    def _delay(self, count: int, cap: float) -> float:
        raw = min(cap, self.base * (2.0 ** min(count, 30)))
        return raw * (0.5 + self._rand() / 2)  # "equal jitter": never below half

    def empty(self) -> float:
        self._errors = 0
        delay = self._delay(self._empties, self.empty_cap)
        self._empties += 1
        return delay

    def error(self) -> float:
        delay = self._delay(self._errors, self.error_cap)
        self._errors += 1
        return delay

    def reset(self) -> None:
        self._empties = 0
        self._errors = 0


class Worker:
    """Owns the fetcher, the engine, delivery, the heartbeat and the other thread roles."""

    def __init__(self, config: Config, transport: Optional[Transport] = None) -> None:
        self.config = config
        self.transport = transport or Transport(config)
        self.stats = Stats()
        self.spool = Spool(config.spool_dir)
        self.stop_reason = ""
        self.exit_code = 0
        self.last_tick = time.monotonic()
        self._stopping = threading.Event()
        self._backoff = Backoff()
        self._cancel_backoff = Backoff()
        self._cancel_failing = False
        self._cancel_idle = True

        self.metrics = create_metrics()
        self.supervisor = Supervisor(on_restart=self.metrics.thread_restarted)
        self.resender = Resender(self.spool, self._resend)
        self.delivery = Delivery(
            config,
            self.transport,
            self.spool,
            self.stats,
            on_spooled=self._spooled,
            metrics=self.metrics,
        )
        self.engine = Engine(
            config,
            self.delivery,
            on_result=self._on_result,
            track=self._track,
            metrics=self.metrics,
            feeder=self._feed,
        )
        # A pause a pool thread's take asked for (its backoff), kept by the fetcher.
        self._next_take_at = 0.0
        self.fetcher = self.supervisor.add(Role("fetcher", self.step))
        self.resend_role = self.supervisor.add(Role("resender", self.resender.turn))
        self.heartbeat = Heartbeat(self._ping, self.job_ids, config.ping_interval)
        if config.ping_url:
            self.supervisor.add(self.heartbeat)
        self.cancel_poller: Optional[Role] = None
        if config.job_stop_url:
            self.cancel_poller = self.supervisor.add(
                Role("cancel-poller", self._poll_cancels, first_delay=None)
            )
        self.supervisor.add(self.engine.watchdog)
        self.health: Optional[HealthServer] = None
        if config.health_port:
            self.health = HealthServer(
                "0.0.0.0", config.health_port, self.health_status, metrics=self.metrics.render
            )
        self.metrics.watch(
            lambda: len(self.engine), lambda: self.concurrency, lambda: len(self.spool)
        )

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start every thread role; returns at once."""
        log.info(
            "worker %s starting (%s, concurrency %d)",
            self.config.worker_id,
            self.config.platform,
            self.engine.update_concurrency(),
        )
        self.spool.prepare()
        if self.health is not None:
            self.health.start()
        # The fetcher last: everything a job needs is running before one is taken.
        for role in self.supervisor.roles:
            if role is not self.fetcher:
                role.start()
        self.fetcher.start()

    def supervise(self) -> None:
        """Called by the main thread about every half second: restart dead roles."""
        reason = self.supervisor.check()
        if reason is not None and not self.stopping:
            log.error(
                "%s; draining and exiting with code 1 so the platform replaces this worker", reason
            )
            self.exit_code = 1
            self.request_stop(reason)

    def signal_stop(self, reason: str) -> None:
        """Only set the stop flag: what a signal handler may do.

        ``start()``'s main loop wakes on the flag and calls ``stop()`` in the main thread.
        """
        if not self._stopping.is_set():
            self.stop_reason = reason
            self._stopping.set()

    def request_stop(self, reason: str = "requested") -> None:
        """Stop taking jobs (safe from any thread); ``stop()`` cuts a long-poll still open."""
        self.signal_stop(reason)
        self.fetcher.stop()
        self.engine.wake()  # a fetcher waiting for a slot sees the stop now
        if self.cancel_poller is not None:
            self.cancel_poller.stop()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_stop_requested(self, timeout: Optional[float] = None) -> bool:
        return self._stopping.wait(timeout)

    def stop(self) -> bool:
        """Shut down in one fixed order; returns False when handler threads are stuck.

        The order matters, and the whole of it is bounded by drain_timeout + 5 s:
        1. stop fetching and cancel-polling; a take in flight gets FETCH_GRACE
           to arrive, then an open long-poll is cut: no new jobs;
        2. drain: running jobs finish up to the drain deadline (their results
           leave as they finish); jobs still running then get a FAILED result;
        3. results still not delivered a short grace after the deadline are
           spooled;
        4. one last pass over the spool within the same bound, then cut open posts;
        5. stop the watchdog, then the heartbeat: it outlives the jobs, so the
           platform sees them as running until their results are out; then
           the health server (it reports draining until here);
        6. close the pool, the event loops and the HTTP sessions.
        """
        self.request_stop(self.stop_reason or "stop")
        log.info("worker stopping (%s)", self.stop_reason)
        self.resend_role.stop()
        # A take already answered (Waverless answers at once) gets a moment to
        # arrive: cutting it would lose its jobs. A long-poll still open after
        # that is cut, so it cannot delay the exit. (The take in flight may be
        # the fetcher's or a pool thread's: the engine knows.)
        self.engine.wait_take_over(FETCH_GRACE)
        self.transport.abort_fetch()
        for role in (self.fetcher, self.cancel_poller):
            if role is not None:
                role.join(2.0)
        drain_deadline = time.monotonic() + self.config.drain_timeout
        stuck = self.engine.drain(drain_deadline)
        if stuck:
            log.error("%d job(s) still running at the drain deadline were reported FAILED", stuck)
        final_deadline = drain_deadline + DELIVERY_GRACE
        if not self.delivery.wait_idle(final_deadline):
            self.delivery.spool_pending()
        self.resend_role.join(1.0)
        if time.monotonic() < final_deadline and len(self.spool):
            # One last pass over the spool, within the same bound.
            Resender(self.spool, lambda e: self.delivery.resend(e, final_deadline)).turn()
        self.delivery.close()
        self.engine.watchdog.stop()
        self.heartbeat.stop()
        self.heartbeat.join(2.0)
        if self.health is not None:
            self.health.stop()
        clean = self.engine.close()
        self.transport.close()
        stats = self.stats.snapshot()
        log.info(
            "worker stopped: %d taken, %d delivered, %d refused, %d spooled",
            stats["taken"],
            stats["delivered"],
            stats["refused"],
            stats["spooled"],
        )
        return clean

    # -- state read by other threads -------------------------------------------

    @property
    def concurrency(self) -> int:
        return self.engine.concurrency.value

    def job_ids(self) -> list[str]:
        """The ids of the jobs this worker holds right now."""
        return self.engine.job_ids()

    def health_status(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        fetcher_alive = self.fetcher.alive
        tick_age = now - self.last_tick
        state = "draining" if self.stopping else "running"
        dead = {r.name: r.death or "not running" for r in self.supervisor.roles if r.died}
        failing = {
            r.name: f"{r.failures} failures in a row, last: {r.last_error}"
            for r in self.supervisor.roles
            if r.failures >= FAILING_AFTER
        }
        healthy = self.stopping or (
            fetcher_alive
            and not dead
            and not failing
            and tick_age < self.config.fetch_timeout + 30
        )
        details = {
            "status": "ok" if healthy else "unhealthy",
            "state": state,
            "worker_id": self.config.worker_id,
            "fetcher_alive": fetcher_alive,
            "seconds_since_tick": round(tick_age, 3),
            "jobs_in_progress": len(self.engine),
            "concurrency": self.concurrency,
            "stats": self.stats.snapshot(),
            "threads": {
                "dead": dead,
                "failing": failing,
                "restarts": self.supervisor.restart_count,
                "last_deaths": dict(self.supervisor.deaths),
            },
        }
        return healthy, details

    # -- the fetcher --------------------------------------------------------------

    def step(self) -> Optional[float]:
        """One turn of the fetcher: wait for a free slot, take jobs, admit them.

        Returns how long to wait before the next turn.
        """
        free = self.engine.claim_take(self._stopping, 1.0)
        self.last_tick = time.monotonic()
        if free <= 0:
            return 0.0  # claim_take already waited for a slot (up to a second)
        try:
            pause = self._next_take_at - self.last_tick
            if pause > 0:
                return pause  # a pool thread's last take asked for a pause
            return self._take(free)
        finally:
            self.engine.took()

    def _feed(self, free: int) -> None:
        """The engine's feeder: a pool thread whose job has just left takes the next jobs.

        The same take as the fetcher's, from the pool thread, so the job it
        keeps runs with no thread switch; a pause its answer asks for (empty,
        error, throttled) is left for the fetcher to keep.
        """
        if self.stopping or time.monotonic() < self._next_take_at:
            return  # (a pause still running: the fetcher, woken by took(), keeps it)
        delay = self._take(free)
        if delay > 0:
            self._next_take_at = time.monotonic() + delay

    def _take(self, free: int) -> float:
        """Ask for up to ``free`` jobs and admit them; returns the pause before the next take."""
        asked = time.monotonic()
        result = self.transport.take(free, len(self.engine) > 0)
        self.last_tick = time.monotonic()
        if result.kind is TakeKind.JOBS:
            log.debug(
                "job-take answered in %.1f ms with %d job(s)",
                (self.last_tick - asked) * 1000.0,
                len(result.jobs) + len(result.malformed),
            )
        return self._accept(result)

    def _accept(self, result: TakeResult) -> float:
        kind = result.kind
        self.metrics.take(kind.value)
        if kind is TakeKind.EMPTY:
            return self._backoff.empty()
        if kind is TakeKind.THROTTLED:
            # Retry-After is a floor, not the whole wait: "0" must not become a hot loop.
            floor = 5.0 if result.retry_after is None else result.retry_after
            delay = max(floor, self._backoff.error())
            log.warning("job-take throttled (429); waiting %.1f s", delay)
            return min(delay, 300.0)
        if kind is TakeKind.ERROR:
            delay = self._backoff.error()
            if not self.stopping:  # at shutdown the open take is cut on purpose
                log.warning("job-take failed (%s); retrying in %.2f s", result.detail, delay)
            return delay
        if kind is not TakeKind.JOBS:
            raise AssertionError(f"unhandled job-take outcome {kind!r}")
        started = 0
        for job_id, why in result.malformed:
            log.error("malformed job %s: %s; reporting it FAILED", job_id, why)
            if self._admit(Job({"id": job_id}), failure(job_id, f"malformed job: {why}")):
                self.stats.add("taken")
        for data in result.jobs:
            if self._admit(Job(data)):
                self.stats.add("taken")
                started += 1
        if not started:
            # Nothing runnable (duplicates, malformed jobs): an empty answer for
            # the backoff, or a platform repeating them would make us hot-loop.
            return self._backoff.empty()
        self._backoff.reset()
        return 0.0

    def _admit(self, job: Job, known_result: Optional[JobResult] = None) -> bool:
        if self.engine.submit(job, known_result, force=self.stopping) is None:
            self.stats.add("duplicates")
            log.warning("job %s was handed out again while it runs here; ignored", job.id)
            return False
        return True

    # -- hooks from the engine and delivery ----------------------------------------

    def _track(self, job: Job, started: bool) -> None:
        if started and self.cancel_poller is not None and self._cancel_idle:
            self._cancel_idle = False
            self.cancel_poller.wake()

    def _on_result(self, run: JobRun, result: JobResult, outcome: FinalOutcome) -> None:
        if result.refresh and not self.stopping and outcome is not FinalOutcome.DISCARDED:
            log.info("refresh_worker: stopping after job %s", result.job_id)
            self.request_stop("refresh_worker")

    def _ping(self, job_ids: Iterable[str]) -> bool:
        ok = bool(self.transport.ping(job_ids))
        if not ok:
            self.metrics.heartbeat_failed()
        return ok

    def _spooled(self) -> None:
        self.resend_role.wake()

    def _resend(self, entry: Any) -> tuple[bool, str]:
        return self.delivery.resend(entry)

    # -- the platform's per-job cancel channel ---------------------------------------

    def _poll_cancels(self) -> Optional[float]:
        """Poll RunPod's job-stop channel while jobs run; cancel the listed ones."""
        # Say "idle" before looking: a job that starts after the look then
        # finds the flag set and wakes us (set after the look, its wake-up
        # could be missed and the poller sleep through the job).
        self._cancel_idle = True
        if not len(self.engine):
            return None  # woken when a job starts
        self._cancel_idle = False
        poll = self.transport.poll_cancels()
        kind = poll.kind
        if kind is CancelKind.NO_URL:
            return None
        if kind is CancelKind.ERROR:
            if not self._cancel_failing and not self.stopping:
                log.warning("the job-stop channel failed (%s); retrying with backoff", poll.detail)
            self._cancel_failing = True
            return self._cancel_backoff.error()
        self._cancel_failing = False
        if kind is CancelKind.NONE:
            return self._cancel_backoff.empty()
        if kind is not CancelKind.JOBS:
            raise AssertionError(f"unhandled job-stop outcome {kind!r}")
        self._cancel_backoff.reset()
        self.cancel_jobs(poll.ids)
        return 0.0

    def cancel_jobs(self, job_ids: list[str]) -> None:
        """Cancel running jobs by id; their results will not be posted."""
        for job_id in job_ids:
            if self.engine.cancel(job_id):
                log.info("the platform cancelled job %s", job_id)
