"""Prometheus metrics, with the optional extra ``wavespeed[metrics]``.

``create_metrics()`` returns a ``Metrics`` bound to a registry of its own
(never prometheus_client's global one: two workers in one process, as in
tests, do not collide) when ``prometheus_client`` is installed, else a
``NullMetrics`` whose methods do nothing. ``prometheus_client`` is imported
only here, only when ``start()`` runs. No label carries a job id: label
values are a handful of fixed words, so cardinality stays bounded.
"""

from typing import Any, Callable, Optional

MISSING = (
    "metrics need the optional extra: pip install 'wavespeed[metrics]' "
    "(it installs prometheus_client)\n"
)

# Job-duration buckets, seconds: from a no-op job to a long video render.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class NullMetrics:
    """What the worker records into when prometheus_client is not installed."""

    enabled = False

    def job_ended(self, kind: str, status: str, seconds: float) -> None:
        pass

    def take(self, outcome: str) -> None:
        pass

    def post(self, outcome: str) -> None:
        pass

    def chunk(self) -> None:
        pass

    def heartbeat_failed(self) -> None:
        pass

    def thread_restarted(self, role: str) -> None:
        pass

    def watch(
        self,
        in_flight: Callable[[], float],
        concurrency: Callable[[], float],
        spool_size: Optional[Callable[[], float]] = None,
    ) -> None:
        pass

    def render(self) -> tuple[int, bytes, str]:
        """(status, body, content type) for ``GET /metrics``."""
        return 404, MISSING.encode("utf-8"), "text/plain; charset=utf-8"


class Metrics(NullMetrics):
    """The worker's metrics in a registry of their own."""

    enabled = True

    def __init__(self, prometheus: Any) -> None:
        self._prometheus = prometheus
        self.registry = prometheus.CollectorRegistry(auto_describe=True)

        def counter(name: str, doc: str, *labels: str) -> Any:
            return prometheus.Counter(name, doc, labels, registry=self.registry)

        def gauge(name: str, doc: str) -> Any:
            return prometheus.Gauge(name, doc, registry=self.registry)

        self.jobs = counter(
            "wavespeed_jobs", "Jobs that ended, by handler kind and final status", "kind", "status"
        )
        self.duration = prometheus.Histogram(
            "wavespeed_job_duration_seconds",
            "Time from a job's start to its final result",
            ["kind"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.takes = counter(
            "wavespeed_job_takes",
            "Job-take requests by outcome (jobs, empty, throttled, error)",
            "outcome",
        )
        self.posts = counter(
            "wavespeed_result_posts",
            "Final results by outcome (delivered, retried, refused, spooled, dropped)",
            "outcome",
        )
        self.chunks = counter("wavespeed_stream_chunks", "Stream chunks delivered")
        self.heartbeats = counter("wavespeed_heartbeat_failures", "Heartbeats that failed")
        self.restarts = counter(
            "wavespeed_thread_restarts", "Worker threads restarted after dying", "role"
        )
        self.in_flight = gauge("wavespeed_jobs_in_flight", "Jobs held by the worker now")
        self.concurrency = gauge("wavespeed_concurrency", "The current concurrency")
        self.spool = gauge("wavespeed_spool_entries", "Results waiting in the spool")
        # Labelled children, looked up once: labels() validates and locks on
        # every call, which a per-job path should not pay each time.
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric),) + values
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def job_ended(self, kind: str, status: str, seconds: float) -> None:
        self._child(self.jobs, kind, status).inc()
        self._child(self.duration, kind).observe(seconds)

    def take(self, outcome: str) -> None:
        self._child(self.takes, outcome).inc()

    def post(self, outcome: str) -> None:
        self._child(self.posts, outcome).inc()

    def chunk(self) -> None:
        self.chunks.inc()

    def heartbeat_failed(self) -> None:
        self.heartbeats.inc()

    def thread_restarted(self, role: str) -> None:
        self.restarts.labels(role).inc()

    def watch(
        self,
        in_flight: Callable[[], float],
        concurrency: Callable[[], float],
        spool_size: Optional[Callable[[], float]] = None,
    ) -> None:
        self.in_flight.set_function(in_flight)
        self.concurrency.set_function(concurrency)
        if spool_size is not None:
            self.spool.set_function(spool_size)

    def render(self) -> tuple[int, bytes, str]:
        return (
            200,
            self._prometheus.generate_latest(self.registry),
            self._prometheus.CONTENT_TYPE_LATEST,
        )


def create_metrics() -> NullMetrics:
    """Metrics when prometheus_client is installed, else the null object."""
    try:
        import prometheus_client
    except ImportError:
        return NullMetrics()
    return Metrics(prometheus_client)
