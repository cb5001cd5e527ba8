"""The job engine: admit a job into a slot, run it, hand its result on, free the slot.

The worker, the local HTTP API and local test mode all run jobs here; they
differ only in the ``Destination`` (where a job's chunks, progress and
final result go) and in where jobs come from.

    submit ──▶ slot ──▶ sync handler: a pool thread runs it (Runner.run)
                   └──▶ async handler: a task on the shared loop (Runner.run_async)
                              │
                 complete (first result wins) ──▶ channel.close(result)
                              │
                 the result has left (delivered / stored / spooled) ──▶ slot freed

Taking jobs: one take at a time. The owner's fetcher claims it with
``claim_take`` (which waits for a free slot) and gives it back with
``took``. A thread that has just delivered a result while the fetcher
waits for a slot takes the next jobs itself, through the owner's
``feeder``: a pool thread (its sync job's result left inline) runs the
first job it gets on the spot, so at steady load a job goes from take to
result on one thread; a delivery thread (an async job's result) hands what
it took to the loop. Neither wakes the fetcher (see ``_feed``).

The one-final-result rule is structural: ``_complete`` takes the first
result under the run's lock; a per-job timeout or the shutdown deadline
decides the result *before* cancelling the handler, so a handler that ends
because it was cancelled can never replace it.

Why one module of about 590 lines: the slot bookkeeping, the backlog, the
one take at a time, the first-result-wins rule and the watchdog share one
lock discipline (the engine's condition, then a run's lock, never the other
way round); split apart, that order would have to be kept across files.
"""

import dataclasses
import threading
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional, Protocol

from .concurrency import MAX_ASYNC, MAX_THREADS, Concurrency
from .config import Config
from .eventloop import SharedLoop
from .handler import ThreadLoops, is_async_handler
from .job import Job, JobResult, failure
from .logs import logger
from .metrics import NullMetrics
from .progress import running_jobs
from .roles import Role
from .runner import Runner

log = logger("engine")


class ClosingChannel(Protocol):
    """A job's channel as the engine sees it: the runner's Channel plus ``close``."""

    def close(
        self,
        result: Optional[JobResult],
        on_done: Callable[[JobResult, Any], None],
        inline: bool = False,
    ) -> None:
        """Take the final result (None: nothing to post); call ``on_done`` once it has left."""


class Destination(Protocol):
    def open(self, job: Job) -> Any:
        """A new channel (a ``runner.Channel`` with ``close``) for one job."""


class JobRun:
    """The engine's bookkeeping for one job it holds."""

    __slots__ = (
        "job",
        "channel",
        "started",
        "ended",
        "lock",
        "completed",
        "decided",
        "in_thread",
        "status",
        "timeout",
        "on_loop",
        "taken",
        "__weakref__",
    )

    def __init__(self, job: Job, channel: Any, timeout: Optional[float] = None) -> None:
        self.job = job
        self.timeout = timeout  # seconds of running before TIMED_OUT (None: no limit)
        self.channel = channel
        self.taken = self.started = time.monotonic()
        self.ended = 0.0
        self.lock = threading.Lock()
        self.completed = False
        # A result decided outside the handler (timeout, shutdown): it wins
        # over whatever the cancelled handler returns.
        self.decided: Optional[JobResult] = None
        self.in_thread = False  # a pool thread is running its handler
        self.status = "IN_PROGRESS"
        self.on_loop = False  # ran (or continued) on the shared event loop


ResultHook = Callable[[JobRun, JobResult, Any], None]


class Engine:
    """Runs jobs for one owner (worker, local API or local test mode)."""

    def __init__(
        self,
        config: Config,
        destination: Destination,
        *,
        initial_concurrency: int = 1,
        on_result: Optional[ResultHook] = None,
        track: Optional[Callable[[Job, bool], None]] = None,
        metrics: Optional[NullMetrics] = None,
        feeder: Optional[Callable[[int], None]] = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or NullMetrics()
        self.destination = destination
        self._on_result = on_result
        self._track = track  # told when a job starts (True) and ends (False)
        # Takes up to n jobs from the calling thread and submits them (the worker's take).
        self._feeder = feeder
        self.loops = ThreadLoops()
        mode = getattr(config, "async_mode", "shared")
        self.shared: Optional[SharedLoop] = SharedLoop() if mode == "shared" else None
        self.runner = Runner(config, self.loops, self.shared)
        self.async_handler = self.shared is not None and is_async_handler(config.handler)
        self.concurrency = Concurrency(
            config.concurrency_modifier,
            initial_concurrency,
            cap=MAX_ASYNC if self.async_handler else MAX_THREADS,
        )
        self._pool = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="wavespeed-job")
        self._cond = threading.Condition()
        self._runs: dict[str, JobRun] = {}
        self._backlog: deque[JobRun] = deque()
        # Runs whose result is decided but whose handler thread still runs.
        self._abandoned: weakref.WeakSet[JobRun] = weakref.WeakSet()
        # The one take at a time: held by the fetcher (claim_take .. took) or
        # by a thread feeding itself (_feed); _parked counts fetchers waiting for a slot.
        self._taking = False
        self._parked = 0
        self._draining = False  # drain() waits on _cond for every run's end
        # Per pool thread: the run whose result it is delivering (finishing),
        # whether it should take the next jobs (feed), and the job it keeps (carried).
        self._local = threading.local()
        # Enforces per-job timeouts; sleeps (no wake-ups) while no job has one.
        self._watch_idle = True
        self.watchdog = Role("watchdog", self._sweep, first_delay=None)

    # -- slots ---------------------------------------------------------------------

    def update_concurrency(self) -> int:
        """Ask the modifier (user code: never called with a lock held)."""
        return self.concurrency.update()

    def claim_take(self, stop: threading.Event, timeout: float = 1.0) -> int:
        """Wait up to ``timeout`` for a free slot and the take; returns how many slots are free.

        A non-zero answer hands the caller the one take at a time: it asks
        the platform for that many jobs, submits them, then calls ``took()``.
        0 when stopping, still full, or another thread is taking jobs itself.
        """
        concurrency = self.update_concurrency()
        with self._cond:
            ready = self._from_backlog(concurrency)
            if not ready and (self._taking or len(self._runs) >= concurrency) and not stop.is_set():
                self._parked += 1
                try:
                    self._cond.wait(timeout)
                finally:
                    self._parked -= 1
        for run in ready:
            self._launch(run, None)
        with self._cond:
            if stop.is_set() or self._taking:
                return 0
            free = max(0, concurrency - len(self._runs))
            self._taking = free > 0
            return free

    def took(self) -> None:
        """The take claimed with ``claim_take`` (or fed) is over: its jobs are submitted."""
        with self._cond:
            self._taking = False
            if len(self._runs) < self.concurrency.value or self._backlog:
                self._cond.notify_all()

    def wake(self) -> None:
        """Wake a fetcher waiting in ``claim_take`` (it re-checks its stop flag)."""
        with self._cond:
            self._cond.notify_all()

    def wait_take_over(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the take in flight (if any) to end; True when none is."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._taking:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return True

    def job_ids(self) -> list[str]:
        with self._cond:
            return list(self._runs)

    def __len__(self) -> int:
        with self._cond:
            return len(self._runs)

    # -- admitting and running -------------------------------------------------------

    def submit(
        self,
        job: Job,
        known_result: Optional[JobResult] = None,
        force: bool = False,
        timeout: Optional[float] = None,
    ) -> Optional[JobRun]:
        """Take responsibility for a job; None when it is already held here.

        ``known_result`` is a result known before running (a malformed job). A job
        that finds no free slot waits in a backlog (``force`` starts it anyway).
        ``timeout`` overrides the configured per-job timeout.
        """
        with self._cond:
            if job.id in self._runs or any(r.job.id == job.id for r in self._backlog):
                return None
            run = JobRun(job, None, timeout if timeout is not None else self.config.job_timeout)
            if known_result is not None or force or len(self._runs) < self.concurrency.value:
                self._admit(run)
            else:
                log.warning("more jobs than free slots; job %s waits for one", job.id)
                self._backlog.append(run)
                return run
        self._launch(run, known_result)
        return run

    def _admit(self, run: JobRun) -> None:
        """Give the run a slot (lock held)."""
        self._runs[run.job.id] = run
        run.started = time.monotonic()

    def _from_backlog(self, concurrency: int) -> list[JobRun]:
        """Admit waiting jobs while slots are free (lock held); the caller launches them."""
        ready = []
        while self._backlog and len(self._runs) < concurrency:
            run = self._backlog.popleft()
            self._admit(run)
            ready.append(run)
        return ready

    def _launch(self, run: JobRun, known_result: Optional[JobResult]) -> None:
        job = run.job
        try:
            run.channel = self.destination.open(job)
            job.channel = run.channel
            running_jobs().track(job, True)  # progress_update({"id": ...}) from any thread
            if self._track is not None:
                self._track(job, True)
            if run.timeout and self._watch_idle:
                self._watch_idle = False
                self.watchdog.wake()
            if known_result is not None:
                self._complete(run, known_result)
            elif self.async_handler:
                assert self.shared is not None
                run.on_loop = True
                self.shared.spawn(
                    lambda: self.runner.run_async(job),
                    lambda task: self._task_done(run, task),
                    lambda cancel: self._cancel_hook(job, cancel),
                )
            else:
                run.in_thread = True
                local = self._local
                if getattr(local, "carrying", False):
                    # A pool thread feeding itself: it runs this one when the take is over.
                    local.carrying = False
                    local.carried = run
                else:
                    self._pool.submit(self._in_thread, run)
        except BaseException as exc:  # noqa: BLE001 - e.g. no thread could be started
            log.error("could not start job %s: %s: %s", job.id, type(exc).__name__, exc)
            if run.channel is None:
                run.channel = self.destination.open(job)
            self._complete(
                run, failure(job.id, f"internal worker error: could not start the job: {exc}")
            )

    @staticmethod
    def _cancel_hook(job: Job, cancel: Callable[[], None]) -> None:
        job.cancel_hook = cancel
        if job.cancelled.is_set():
            cancel()

    def _in_thread(self, run: Optional[JobRun]) -> None:
        """A pool thread: run the job; then, when it was asked to, take and run the next."""
        local = self._local
        while run is not None:
            self._run_sync(run)
            if not getattr(local, "feed", False):
                return
            local.feed = False
            run = self._feed()

    def _run_sync(self, run: JobRun) -> None:
        local = self._local
        try:
            outcome = self.runner.run(run.job)
            if isinstance(outcome, JobResult):
                local.finishing = run
                self._complete(run, outcome, inline=True)
                return
            # The handler returned a coroutine: the rest runs on the shared loop.
            assert self.shared is not None
            self.concurrency.cap = MAX_ASYNC
            run.on_loop = True
            self.shared.spawn(
                lambda: outcome,
                lambda task: self._task_done(run, task),
                lambda cancel: self._cancel_hook(run.job, cancel),
            )
        except BaseException as exc:  # noqa: BLE001 - the runner should never raise; be sure
            log.exception("internal error running job %s", run.job.id)
            local.finishing = run
            self._complete(
                run,
                failure(run.job.id, f"internal worker error: {type(exc).__name__}: {exc}"),
                inline=True,
            )
        finally:
            local.finishing = None
            run.in_thread = False

    def _feed(self, carry: bool = True) -> Optional[JobRun]:
        """Take the next jobs from this thread; returns the one it keeps to run.

        Called when a result has just left from this thread (a pool thread
        that ran the job, or a delivery thread) and the fetcher was waiting
        for a slot: ``_left`` handed the take to this thread instead of
        waking the fetcher. With ``carry``, the first sync job taken stays
        here; the others go to the pool (or the shared loop) as usual.
        """
        local = self._local
        local.carried = None
        try:
            concurrency = self.update_concurrency()
            with self._cond:
                free = concurrency - len(self._runs)
            if free > 0 and self._feeder is not None:
                local.carrying = carry
                self._feeder(free)
        except BaseException:  # noqa: BLE001 - the feeder should never raise; the fetcher goes on
            log.exception("taking jobs from this job or delivery thread failed")
        finally:
            local.carrying = False
            self.took()
        run: Optional[JobRun] = local.carried
        local.carried = None
        return run

    def _task_done(self, run: JobRun, task: Any) -> None:
        """On the loop thread: the job's task ended."""
        if task.cancelled():
            result = JobResult(run.job.id, {}, b"", cancelled=True)
        elif task.exception() is not None:
            exc = task.exception()
            log.error("internal error running job %s: %s: %s", run.job.id, type(exc).__name__, exc)
            result = failure(run.job.id, f"internal worker error: {type(exc).__name__}: {exc}")
        else:
            result = task.result()
        self._complete(run, result)

    # -- the one final result ----------------------------------------------------------

    def _complete(self, run: JobRun, result: JobResult, inline: bool = False) -> None:
        with run.lock:
            if run.completed:
                return
            run.completed = True
            chosen = result
            if run.decided is not None:
                chosen = run.decided
            elif result.cancelled:
                run.status = "CANCELLED"
            else:
                run.status = "FAILED" if result.failed else "COMPLETED"
            final = None if chosen.cancelled else chosen  # cancelled: nothing to post
        run.ended = time.monotonic()
        run.job.cancel_hook = None  # the task's cancel: not needed past here
        self._log_end(run)
        kind = ("async" if run.on_loop else "sync") + ("_generator" if result.is_stream else "")
        self.metrics.job_ended(kind, run.status, run.ended - run.started)
        running_jobs().track(run.job, False)
        if self._track is not None:
            self._track(run.job, False)
        run.channel.close(final, lambda r, o: self._left(run, r, o), inline=inline)

    def _log_end(self, run: JobRun) -> None:
        ms = (run.ended - run.started) * 1000.0
        waited = run.started - run.taken
        if waited > 1.0:
            log.info(
                "job %s %s in %.0f ms (it waited %.1f s for a slot)",
                run.job.id,
                run.status,
                ms,
                waited,
            )
        else:
            log.info("job %s %s in %.0f ms", run.job.id, run.status, ms)

    def _left(self, run: JobRun, result: JobResult, outcome: Any) -> None:
        """The final result has left (delivered, stored, spooled or dropped): free the slot.

        The owner hears of it first, so a ``refresh_worker`` stop is in force
        before the freed slot could let another job in.
        """
        if self._on_result is not None:
            self._on_result(run, result, outcome)
        local = self._local
        finishing = getattr(local, "finishing", None) is run
        feed = False
        with self._cond:
            if self._runs.get(run.job.id) is run:
                del self._runs[run.job.id]
            ready = self._from_backlog(self.concurrency.value)
            if (
                not ready
                and self._parked
                and not self._taking
                and self._feeder is not None
                and len(self._runs) < self.concurrency.value
                and (finishing or self._may_take_here())
            ):
                # This thread takes the next jobs itself (see _feed): the
                # fetcher is not woken, so the slot costs no thread switch.
                self._taking = feed = True
            elif not self._taking or self._draining:
                self._cond.notify_all()
            # else: a take is in flight; its took() wakes the fetcher for the
            # slots free by then, so nobody is woken just to find it busy.
        for waiting in ready:
            self._launch(waiting, None)
        if feed:
            if finishing:
                local.feed = True  # taken once the job's call stack has unwound (_in_thread)
            else:
                self._feed(carry=False)  # a delivery thread: its jobs all go to the pool or loop

    def _may_take_here(self) -> bool:
        may_take = getattr(self.destination, "may_take_here", None)
        return bool(may_take is not None and may_take())

    def decide(self, run: JobRun, result: JobResult, status: str) -> bool:
        """End a run now with ``result`` (timeout, shutdown), then cancel its handler."""
        with run.lock:
            if run.completed or run.decided is not None:
                return False
            run.decided = result
            run.status = status
        run.job.cancel()
        self._complete(run, result)
        if run.in_thread:
            self._abandoned.add(run)
        return True

    def cancel(self, job_id: str) -> bool:
        """Cancel a job: it ends now as CANCELLED (nothing posted), and its handler is cancelled.

        A waiting job leaves the backlog. Returns False when the id is not held
        or its result is already decided.
        """
        with self._cond:
            run = self._runs.get(job_id)
            if run is None:
                waiting = next((r for r in self._backlog if r.job.id == job_id), None)
                if waiting is None:
                    return False
                self._backlog.remove(waiting)
        if run is None:
            assert waiting is not None  # taken from the backlog, or False was returned
            waiting.channel = self.destination.open(waiting.job)
            waiting.status = "CANCELLED"
            waiting.channel.close(None, lambda r, o: None)
            return True
        return self.decide(run, JobResult(job_id, {}, b"", cancelled=True), "CANCELLED")

    def purge(self) -> int:
        """Cancel every job waiting for a slot; returns how many there were."""
        with self._cond:
            waiting = list(self._backlog)
        return sum(1 for run in waiting if self.cancel(run.job.id))

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._backlog)

    # -- the watchdog (per-job timeout) ------------------------------------------------

    def _sweep(self) -> Optional[float]:
        now = time.monotonic()
        with self._cond:
            timed = [r for r in self._runs.values() if r.timeout and not r.completed]
            if not timed:
                self._watch_idle = True
                return None
        late = [r for r in timed if now - r.started >= (r.timeout or 0.0)]
        for run in late:
            log.error(
                "job %s exceeded its timeout (%g s); reporting it TIMED_OUT and freeing "
                "its slot (a sync handler's thread is not killed)",
                run.job.id,
                run.timeout,
            )
            timed_out = failure(
                run.job.id,
                f"TIMED_OUT: the handler ran longer than the per-job timeout ({run.timeout:g} s)",
            )
            self.decide(run, dataclasses.replace(timed_out, timed_out=True), "TIMED_OUT")
        pending = [r.started + (r.timeout or 0.0) for r in timed if r not in late]
        return max(0.01, min(pending) - time.monotonic()) if pending else 0.05

    # -- shutdown ------------------------------------------------------------------------

    def drain(self, deadline: float) -> int:
        """Wait for running jobs until ``deadline``; fail the rest. Returns how many were stuck."""
        with self._cond:
            self._draining = True
            waiting = list(self._backlog)
            self._backlog.clear()
            for run in waiting:
                self._admit(run)  # taken jobs are ours to answer, slot or not
        for run in waiting:
            self._launch(run, None)
        with self._cond:
            while True:
                running = [r for r in self._runs.values() if not r.completed]
                remaining = deadline - time.monotonic()
                if not running or remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.25))
        for run in running:
            self.decide(
                run,
                failure(
                    run.job.id,
                    "worker shutting down: the job was still running at the drain deadline "
                    f"({self.config.drain_timeout:g} s)",
                ),
                "FAILED",
            )
        return len(running)

    @property
    def threads_stuck(self) -> bool:
        """True when a handler thread still runs a job whose result was decided."""
        return any(r.in_thread for r in list(self._abandoned))

    def close(self) -> bool:
        """Stop the watchdog, the pool and the loops; False when handler threads are stuck.

        A handler blocking the shared loop past the drain deadline counts as
        stuck: the loop's thread cannot end, and it would hold the exit.
        """
        self.watchdog.stop()
        self.watchdog.join(2.0)
        stuck = self.threads_stuck
        self._pool.shutdown(wait=not stuck, cancel_futures=True)
        if self.shared is not None and not self.shared.close(1.0):
            log.error("a handler still blocks the shared event loop after the drain deadline")
            stuck = True
        if not stuck:
            self.loops.close_all()
        return not stuck
