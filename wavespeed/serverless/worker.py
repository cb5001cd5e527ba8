"""The worker: take jobs, run them on a thread pool, post every result.

The whole data path reads top to bottom in this file:

    fetcher thread ──take──▶ ThreadPoolExecutor ──run (Runner)──▶ deliver
         ▲                                                          │
         └──────────── a slot frees (Condition notify) ◀────────────┘

- One fetcher thread asks for exactly as many jobs as there are free slots
  and backs off (with jitter) on empty answers and errors.
- Pool threads run the handler through the Runner and post the result in a
  ``finally``: every job taken ends with exactly one final result, delivered,
  replaced by a small FAILED result when refused, or spooled to disk.
- A heartbeat thread reads the live in-flight set; a resender thread re-sends
  spooled results; an optional watchdog enforces a per-job timeout; an
  optional health server answers ``/health``.
- ``stop()`` shuts all of it down in one fixed order.
"""

import random
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .concurrency import MAX_THREADS, Concurrency
from .config import Config
from .handler import ThreadLoops
from .health import HealthServer
from .heartbeat import Heartbeat
from .job import Job, JobResult, encode
from .logs import logger
from .runner import Runner
from .spool import Spool
from .transport import CancelKind, TakeKind, TakeResult, Transport

log = logger("worker")

RESEND_INTERVAL = 5.0


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
        raw = min(cap, self.base * (2 ** min(count, 30)))
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


@dataclass
class ActiveJob:
    """The worker's bookkeeping for one job it holds."""

    job: Job
    started: float = field(default_factory=time.monotonic)
    preset: Optional[JobResult] = None  # a result known before running (malformed job)
    future: Optional["Future[None]"] = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    final_sent: bool = False
    stopped: bool = False  # the platform asked to stop it: post nothing


def failure(job_id: str, message: str, stop_pod: bool = False) -> JobResult:
    """A small FAILED result carrying a plain message."""
    body: Dict[str, Any] = {"error": message}
    if stop_pod:
        body["stopPod"] = True
    return JobResult(job_id, body, encode(body), failed=True, stop_pod=stop_pod)


class Worker:
    """Owns the fetcher, the pool, the heartbeat, the resender and the health server."""

    def __init__(self, config: Config, transport: Optional[Transport] = None) -> None:
        self.config = config
        self.transport = transport or Transport(config)
        self.loops = ThreadLoops()
        self.runner = Runner(config, self.loops)
        self.spool = Spool(config.spool_dir)
        self._concurrency = Concurrency(config.concurrency_modifier)
        self.stop_reason = ""
        self.last_tick = time.monotonic()
        self.stats = {"taken": 0, "delivered": 0, "refused": 0, "spooled": 0, "duplicates": 0}

        self._cond = threading.Condition()
        self._active: Dict[str, ActiveJob] = {}
        self._backlog: Deque[ActiveJob] = deque()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._backoff = Backoff()
        self._pool = ThreadPoolExecutor(max_workers=MAX_THREADS, thread_name_prefix="wavespeed-job")
        self._fetcher = threading.Thread(target=self._fetch_loop, name="wavespeed-fetcher")
        self._resender = threading.Thread(target=self._resend_loop, name="wavespeed-resender")
        self._resend_wake = threading.Event()
        self._watch_stop = threading.Event()
        # Jobs the watchdog gave up on: their threads may still be running.
        self._abandoned: List[ActiveJob] = []
        self._watchdog: Optional[threading.Thread] = None
        self._stopper: Optional[threading.Thread] = None
        if config.job_stop_url:
            self._stopper = threading.Thread(target=self._stop_loop, name="wavespeed-job-stop")
        self._stats_lock = threading.Lock()
        self.heartbeat = Heartbeat(self.transport.ping, self.job_ids, config.ping_interval)
        self.health: Optional[HealthServer] = None
        if config.health_port:
            self.health = HealthServer("0.0.0.0", config.health_port, self.health_status)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        """Start every thread; returns at once."""
        log.info(
            "worker %s starting (%s, concurrency %d)",
            self.config.worker_id,
            self.config.platform,
            self._concurrency.update(),
        )
        if self.health is not None:
            self.health.start()
        if self.config.ping_url:
            self.heartbeat.start()
        self._resender.start()
        if self.config.job_timeout:
            self._watchdog = threading.Thread(target=self._watch_loop, name="wavespeed-watchdog")
            self._watchdog.start()
        if self._stopper is not None:
            self._stopper.start()
        self._fetcher.start()

    def signal_stop(self, reason: str) -> None:
        """Only set the stop flag: what a signal handler may do.

        ``start()``'s main loop wakes on the flag and calls ``stop()`` in the main thread.
        """
        if not self._stopping.is_set():
            self.stop_reason = reason
            self._stopping.set()

    def request_stop(self, reason: str = "requested") -> None:
        """Stop taking jobs, cutting an open long-poll (safe from any thread)."""
        self.signal_stop(reason)
        self.transport.abort_fetch()  # an open long-poll must not delay exit
        with self._cond:
            self._cond.notify_all()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_stop_requested(self, timeout: Optional[float] = None) -> bool:
        return self._stopping.wait(timeout)

    def stop(self) -> bool:
        """Shut down in one fixed order; returns False when handler threads are stuck.

        The order matters:
        1. stop fetching, cutting an open long-poll: no new jobs come in;
        2. drain the pool up to the drain deadline (results still post);
           jobs still running then are reported FAILED;
        3. stop the watchdog, then the heartbeat: it outlives the jobs, so the
           platform sees them as running until their results are in;
        4. re-send the spool once, stop the resender;
        5. stop the health server (it reports draining until here);
        6. close the event loops and the HTTP sessions.
        """
        self.request_stop(self.stop_reason or "stop")
        log.info("worker stopping (%s)", self.stop_reason)
        for thread in (self._fetcher, self._stopper):
            if thread is not None and thread.is_alive():
                thread.join(10)
        with self._cond:  # jobs taken but not started are still ours to answer
            while self._backlog:
                self._submit(self._backlog.popleft())
            pending = [a for a in self._active.values() if a.future is not None]
        futures = [a.future for a in pending if a.future is not None]
        _done, not_done = wait_futures(futures, timeout=self.config.drain_timeout)
        stuck = [a for a in pending if a.future in not_done]
        with self._cond:
            abandoned = [a for a in self._abandoned if a.future is not None and not a.future.done()]
        for active in stuck:
            self._finalize(
                active,
                failure(
                    active.job.id,
                    "worker shutting down: the job was still running at the drain "
                    f"deadline ({self.config.drain_timeout:g} s)",
                ),
            )
            self._release(active)
        stuck_threads = bool(stuck or abandoned)
        self._pool.shutdown(wait=not stuck_threads, cancel_futures=True)
        self._watch_stop.set()
        if self._watchdog is not None:
            self._watchdog.join(5)
        self.heartbeat.stop()
        self._stopped.set()
        self._resend_wake.set()
        if self._resender.is_alive():
            self._resender.join(self.config.result_deadline + 10)
        if self.health is not None:
            self.health.stop()
        if not stuck_threads:
            self.loops.close_all()
        self.transport.close()
        log.info(
            "worker stopped: %d taken, %d delivered, %d refused, %d spooled",
            self.stats["taken"],
            self.stats["delivered"],
            self.stats["refused"],
            self.stats["spooled"],
        )
        return not stuck_threads

    # -- state read by other threads -------------------------------------------

    @property
    def concurrency(self) -> int:
        return self._concurrency.value

    def _count(self, key: str) -> None:
        with self._stats_lock:
            self.stats[key] += 1

    def job_ids(self) -> List[str]:
        """The ids of the jobs this worker holds right now."""
        with self._cond:
            return list(self._active)

    def health_status(self) -> Tuple[bool, Dict[str, Any]]:
        now = time.monotonic()
        fetcher_alive = self._fetcher.is_alive()
        tick_age = now - self.last_tick
        state = "draining" if self.stopping else "running"
        healthy = self.stopping or (
            fetcher_alive and tick_age < self.config.fetch_timeout + 30
        )
        details = {
            "status": "ok" if healthy else "unhealthy",
            "state": state,
            "worker_id": self.config.worker_id,
            "fetcher_alive": fetcher_alive,
            "seconds_since_tick": round(tick_age, 3),
            "jobs_in_progress": len(self.job_ids()),
            "concurrency": self.concurrency,
            "stats": dict(self.stats),
        }
        return healthy, details

    # -- the fetcher --------------------------------------------------------------

    def _fetch_loop(self) -> None:
        try:
            while not self._stopping.is_set():
                delay = self.step()
                if delay > 0:
                    self._stopping.wait(delay)
        except BaseException:  # noqa: BLE001 - logged; /health turns unhealthy
            log.exception("the fetcher thread crashed; no more jobs will be taken")
            raise

    def step(self) -> float:
        """One turn of the fetcher: wait for a free slot, take jobs, start them.

        Returns how long to wait before the next turn.
        """
        free = self._wait_for_free_slot()
        if free <= 0:
            return 0.0
        with self._cond:
            in_progress = bool(self._active)
        result = self.transport.take(free, in_progress)
        self.last_tick = time.monotonic()
        return self._accept(result)

    def _wait_for_free_slot(self) -> int:
        while True:
            concurrency = self._concurrency.update()
            with self._cond:
                while self._backlog and len(self._active) < concurrency:
                    self._submit(self._backlog.popleft())
                free = concurrency - len(self._active)
                if free > 0 or self._stopping.is_set():
                    return free if not self._stopping.is_set() else 0
                # Woken when a job ends; the timeout re-reads the modifier
                # and keeps /health's tick fresh while every slot is busy.
                self._cond.wait(1.0)
            self.last_tick = time.monotonic()

    def _accept(self, result: TakeResult) -> float:
        if result.kind is TakeKind.EMPTY:
            return self._backoff.empty()
        if result.kind is TakeKind.THROTTLED:
            # Retry-After is a floor, not the whole wait: "0" must not become a hot loop.
            floor = 5.0 if result.retry_after is None else result.retry_after
            delay = max(floor, self._backoff.error())
            log.warning("job-take throttled (429); waiting %.1f s", delay)
            return min(delay, 300.0)
        if result.kind is TakeKind.ERROR:
            delay = self._backoff.error()
            if not self.stopping:  # at shutdown the open take is cut on purpose
                log.warning("job-take failed (%s); retrying in %.2f s", result.detail, delay)
            return delay
        self._backoff.reset()
        with self._cond:
            for job_id, why in result.malformed:
                log.error("malformed job %s: %s; reporting it FAILED", job_id, why)
                self._hold(Job({"id": job_id}, self), failure(job_id, f"malformed job: {why}"))
            for data in result.jobs:
                self._hold(Job(data, self))
        return 0.0

    def _hold(self, job: Job, preset: Optional[JobResult] = None) -> None:
        """Take responsibility for one job (called with the lock held)."""
        if job.id in self._active or any(a.job.id == job.id for a in self._backlog):
            self._count("duplicates")
            log.warning("job %s was handed out again while it runs here; ignored", job.id)
            return
        self._count("taken")
        active = ActiveJob(job, preset=preset)
        if len(self._active) < self.concurrency or self._stopping.is_set():
            self._submit(active)
        else:
            log.warning("the platform sent more jobs than free slots; job %s waits", job.id)
            self._backlog.append(active)

    def _submit(self, active: ActiveJob) -> None:
        self._active[active.job.id] = active
        active.started = time.monotonic()
        active.future = self._pool.submit(self._process, active)
        self._cond.notify_all()  # wakes the job-stop poller

    # -- a pool thread ------------------------------------------------------------

    def _process(self, active: ActiveJob) -> None:
        result: Optional[JobResult] = active.preset
        try:
            if result is None:
                result = self.runner.run(active.job)
        except BaseException as exc:  # noqa: BLE001 - the runner should never raise; be sure
            log.exception("internal error running job %s", active.job.id)
            result = failure(active.job.id, f"internal worker error: {type(exc).__name__}: {exc}")
        finally:
            try:
                if result is None:
                    result = failure(active.job.id, "internal worker error: no result")
                self._finalize(active, result)
            finally:
                self._release(active)

    def _finalize(self, active: ActiveJob, result: JobResult) -> None:
        """Send the one final result of a job, unless one was already sent."""
        with active.lock:
            if active.final_sent:
                return
            active.final_sent = True
        if result.cancelled or active.stopped:
            log.info("job %s was stopped by the platform; no result is posted", result.job_id)
            return
        self.deliver(result.job_id, result.payload, result.is_stream)
        if result.stop_pod and not self.stopping:
            log.info("refresh_worker: stopping after job %s", result.job_id)
            self.request_stop("refresh_worker")

    def _release(self, active: ActiveJob) -> None:
        with self._cond:
            if self._active.get(active.job.id) is active:
                del self._active[active.job.id]
                self._cond.notify_all()

    def deliver(self, job_id: str, payload: bytes, is_stream: bool) -> bool:
        """Post a final result; replace it when refused; spool it when undeliverable."""
        delivery = self.transport.post_result(job_id, payload, is_stream)
        if delivery.ok:
            self._count("delivered")
            return True
        if delivery.refused:
            self._count("refused")
            log.error(
                "the platform refused the result of job %s (HTTP %s: %s); posting a FAILED result",
                job_id,
                delivery.status,
                delivery.detail[:200],
            )
            reason = failure(
                job_id,
                f"the platform refused the job's result (HTTP {delivery.status}, "
                f"{len(payload)} bytes): {delivery.detail[:200]}",
            )
            delivery = self.transport.post_result(job_id, reason.payload, is_stream)
            if delivery.ok:
                self._count("delivered")
                return True
            if delivery.refused:
                log.error("the FAILED result of job %s was refused too; giving up", job_id)
                return False
            payload = reason.payload
        path = self.spool.save(job_id, payload, is_stream)
        if path is not None:
            self._count("spooled")
            log.warning(
                "could not deliver the result of job %s (%s); spooled to %s for re-sending",
                job_id,
                delivery.detail or f"HTTP {delivery.status}",
                path,
            )
            self._resend_wake.set()
        return False

    # -- the Channel a Job carries (stream chunks and progress) -------------------

    def send_chunk(self, job: Job, value: Any, payload: bytes) -> None:
        delivery = self.transport.post_chunk(job.id, payload)
        if not delivery.ok:
            log.warning(
                "stream chunk of job %s not delivered (%s)",
                job.id,
                delivery.detail or f"HTTP {delivery.status}",
            )

    def send_progress(self, job: Job, data: Any) -> None:
        with self._cond:
            active = self._active.get(job.id)
        if active is None:
            log.warning("progress_update for job %s, which is not running here; dropped", job.id)
            return
        payload = encode({"status": "IN_PROGRESS", "output": data})
        # Holding the job's lock orders updates and keeps them before the
        # final result, which takes the same lock.
        with active.lock:
            if active.final_sent:
                log.debug("progress_update after the final result of job %s; dropped", job.id)
                return
            delivery = self.transport.post_progress(job.id, payload)
        if not delivery.ok:
            log.debug("progress update of job %s not delivered", job.id)

    # -- the job-stop channel, the resender and the watchdog -----------------------

    def _stop_loop(self) -> None:
        """Poll RunPod's job-stop channel while jobs run; cancel the listed ones."""
        backoff = Backoff()
        while not self._stopping.is_set():
            with self._cond:
                while not self._active and not self._stopping.is_set():
                    self._cond.wait()
            if self._stopping.is_set():
                return
            poll = self.transport.poll_cancels()
            if poll.kind in (CancelKind.ERROR, CancelKind.NO_URL):
                delay = backoff.error()
            elif poll.kind is CancelKind.NONE:
                delay = backoff.empty()
            else:
                backoff.reset()
                delay = 0.0
                self.stop_jobs(poll.ids)
            if delay:
                self._stopping.wait(delay)

    def stop_jobs(self, job_ids: List[str]) -> None:
        """Cancel running jobs by id; their results will not be posted."""
        for job_id in job_ids:
            with self._cond:
                active = self._active.get(job_id)
            if active is None:
                continue
            log.info("the platform stopped job %s", job_id)
            active.stopped = True
            active.job.cancel()


    def _resend_loop(self) -> None:
        while True:
            try:
                self.resend_spool()
            except Exception:  # noqa: BLE001
                log.exception("re-sending spooled results failed")
            if self._stopped.is_set():
                return
            self._resend_wake.wait(RESEND_INTERVAL)
            self._resend_wake.clear()

    def resend_spool(self) -> int:
        """Try every spooled result once; returns how many were delivered."""
        sent = 0
        for entry in self.spool.entries():
            delivery = self.transport.post_result(entry.job_id, entry.payload, entry.is_stream)
            if delivery.ok or delivery.refused:
                self.spool.remove(entry)
                if delivery.ok:
                    sent += 1
                    self._count("delivered")
                    log.info("re-sent the spooled result of job %s", entry.job_id)
                else:
                    log.error(
                        "the platform refused the spooled result of job %s (HTTP %s); dropped",
                        entry.job_id,
                        delivery.status,
                    )
            else:
                break  # still down: keep the order, try again later
        return sent

    def _watch_loop(self) -> None:
        timeout = self.config.job_timeout or 0.0
        tick = min(1.0, max(0.01, timeout / 10))
        while not self._watch_stop.wait(tick):
            now = time.monotonic()
            with self._cond:
                late = [a for a in self._active.values() if now - a.started > timeout]
            for active in late:
                active.job.cancelled.set()
                log.error(
                    "job %s exceeded the per-job timeout (%g s); reporting it FAILED "
                    "and freeing its slot (the handler thread is not killed)",
                    active.job.id,
                    timeout,
                )
                self._finalize(
                    active,
                    failure(
                        active.job.id,
                        f"TIMED_OUT: the handler ran longer than the per-job timeout "
                        f"({timeout:g} s)",
                    ),
                )
                with self._cond:
                    self._abandoned = [a for a in self._abandoned if not a.future or not a.future.done()]
                    self._abandoned.append(active)
                self._release(active)
