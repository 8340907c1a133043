"""Prometheus metrics of one server, in their own registry (served at the management port's
`GET /metrics`). Request counts and latencies are labelled by model; what belongs to one model
version (batches, session calls, queue, workers, restarts) by model and version.

Example:
    >>> m = ServerMetrics()
    >>> m.requests.labels(model="mlp", api="v2", status="200").inc()
    >>> b"modelkit_requests_total" in m.exposition()
    True
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    """The server's counters, gauges and histograms, labelled by model (and API and status)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("modelkit_requests", "Inference requests answered, by model, API"
                                " and HTTP status", ["model", "api", "status"], registry=r)
        self.latency = Histogram("modelkit_request_latency_seconds", "Inference request latency"
                                 " (from routing to response), by model", ["model"],
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("modelkit_batch_size", "Rows per session call", ["model", "version"],
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.session_calls = Counter("modelkit_session_calls", "Session.run calls made by the"
                                     " workers", ["model", "version"], registry=r)
        self.queue_depth = Gauge("modelkit_queue_depth", "Requests waiting for a worker",
                                 ["model", "version"], registry=r)
        self.workers = Gauge("modelkit_workers", "Live worker processes", ["model", "version"],
                             registry=r)
        self.buffered_body_bytes = Gauge("modelkit_buffered_body_bytes", "Request-body bytes the"
                                         " server holds now, against --max-buffered-mb", registry=r)
        self.worker_restarts = Counter("modelkit_worker_restarts", "Workers restarted after they"
                                       " died or ran past the timeout", ["model", "version"], registry=r)

    def exposition(self) -> bytes:
        """The text exposition format of every metric.

        Example: see the class docstring.
        """
        return generate_latest(self.registry)
