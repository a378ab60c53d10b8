"""Prometheus metrics of the operator, served on `/metrics` (docs/operator.md lists them)."""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from recon_operator.phases import Phase

# Seconds; batch work spans from sub-second API latency to hours of GPU time.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_DURATION_BUCKETS = (10, 30, 60, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)


class PhaseBook(Collector):
    """The last phase the operator set on each CR; exported as `recon_jobs{phase}` at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._phases: dict[tuple[str, str], str] = {}

    def record(self, namespace: str, name: str, phase: str) -> str | None:
        """Remember `phase`; return the one before it (None for a CR not seen yet)."""
        with self._lock:
            previous = self._phases.get((namespace, name))
            self._phases[(namespace, name)] = phase
            return previous

    def forget(self, namespace: str, name: str) -> None:
        with self._lock:
            self._phases.pop((namespace, name), None)

    def counts(self) -> dict[str, int]:
        with self._lock:
            tally = Tally(self._phases.values())
        return {phase.value: tally.get(phase.value, 0) for phase in Phase}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("recon_jobs", "ReconstructionJobs by phase.", labels=["phase"])
        for phase, count in self.counts().items():
            family.add_metric([phase], count)
        yield family


class OperatorMetrics:
    """All metrics in one registry of their own (tests build as many as they like)."""

    def __init__(self) -> None:
        self._server: WSGIServer | None = None
        self.registry = CollectorRegistry()
        self.phases = PhaseBook()
        self.registry.register(self.phases)
        self.time_to_job = Histogram(
            "recon_time_to_job_seconds",
            "From ReconstructionJob creation to its first worker Job's creation.",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_queued = Histogram(
            "recon_time_queued_seconds",
            "From worker Job creation until its worker first ran.",
            buckets=(*_LATENCY_BUCKETS, 600, 1800, 3600),
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "recon_run_duration_seconds",
            "From the worker's first start to the job's completion, by final phase.",
            ["phase"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.retries = Counter(
            "recon_retries_total",
            "Failed worker pods of finished jobs (kind=pod) and new attempts after a resume (kind=attempt).",
            ["kind"],
            registry=self.registry,
        )
        self.preflight_failures = Counter(
            "recon_preflight_failures_total",
            "Preflight checks that failed, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "recon_phase_transitions_total", "Phase changes set by the operator.", ["phase"], registry=self.registry
        )

    def serve(self, port: int) -> int:
        """Serve `/metrics` on `port` (0: any free port) until `stop()`; returns the port."""
        server, _thread = start_http_server(port, registry=self.registry)
        self._server = server
        return int(server.server_port)

    def stop(self) -> None:
        """Stop serving and free the port (an operator restarted in the same process binds it again)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
