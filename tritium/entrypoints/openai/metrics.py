"""Prometheus metrics for /metrics: engine gauges read at scrape time, request histograms and
counters recorded by the server as requests finish.

engine_snapshot() is the one place that asks the engine for its scheduler's state.
"""
from __future__ import annotations

from typing import Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from tritium.engine.stats import SchedulerSnapshot

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0, 20.0, 40.0, 80.0)
_TOKEN_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5)


def engine_snapshot(llm) -> SchedulerSnapshot:
    """The engine's scheduler state (read live in-process; the engine process's last report)."""
    return llm._engine.scheduler_snapshot()


class _EngineCollector:
    def __init__(self, metrics: "ServerMetrics"):
        self._metrics = metrics

    def collect(self):
        snap = self._metrics.snapshot()
        labels = ["model_name"]
        values = [self._metrics.model_name]
        for name, doc, value in (
                ("tritium_num_requests_running", "Requests in the engine's running batch.",
                 snap.num_running if snap else 0),
                ("tritium_num_requests_waiting", "Requests waiting for the engine to admit them.",
                 snap.num_waiting if snap else 0),
                ("tritium_kv_cache_usage_perc", "Share of KV cache blocks in use (1 = full).",
                 snap.kv_cache_usage if snap else 0.0)):
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric(values, value)
            yield g
        c = CounterMetricFamily("tritium_num_preemptions", "Requests preempted (recomputed) so far.",
                                labels=labels)
        c.add_metric(values, snap.num_preemptions_total if snap else 0)
        yield c


class ServerMetrics:
    """One registry per server (tests start several apps in one process)."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.llm = None  # set once the engine is up
        self.registry = CollectorRegistry()
        labels = ["model_name"]
        kw = dict(labelnames=labels, registry=self.registry)
        self.ttft = Histogram("tritium_time_to_first_token_seconds", "Time to first token.",
                              buckets=_LATENCY_BUCKETS, **kw).labels(model_name)
        self.tpot = Histogram("tritium_time_per_output_token_seconds", "Mean time per output token after the first.",
                              buckets=_TOKEN_BUCKETS, **kw).labels(model_name)
        self.e2e = Histogram("tritium_e2e_request_latency_seconds", "End-to-end request latency.",
                             buckets=_LATENCY_BUCKETS, **kw).labels(model_name)
        self.prompt_tokens = Counter("tritium_prompt_tokens", "Prompt tokens processed.", **kw).labels(model_name)
        self.generation_tokens = Counter("tritium_generation_tokens", "Tokens generated.", **kw).labels(model_name)
        self._finished = Counter("tritium_request_success", "Requests finished, by finish reason.",
                                 labelnames=labels + ["finished_reason"], registry=self.registry)
        self._rejected = Counter("tritium_requests_rejected", "Requests refused with 503 (queue full, draining, ...).",
                                 labelnames=labels + ["reason"], registry=self.registry)
        self.registry.register(_EngineCollector(self))

    def snapshot(self) -> Optional[SchedulerSnapshot]:
        return engine_snapshot(self.llm) if self.llm is not None else None

    def record_rejection(self, reason: str) -> None:
        self._rejected.labels(self.model_name, reason).inc()

    def record_finished(self, num_prompt_tokens: int, num_output_tokens: int, finish_reason: Optional[str],
                        arrival: float, first_token: Optional[float], finished: float) -> None:
        self.prompt_tokens.inc(num_prompt_tokens)
        self.generation_tokens.inc(num_output_tokens)
        self._finished.labels(self.model_name, finish_reason or "error").inc()
        self.e2e.observe(finished - arrival)
        if first_token is not None:
            self.ttft.observe(first_token - arrival)
            if num_output_tokens > 1:
                self.tpot.observe((finished - first_token) / (num_output_tokens - 1))

    def render(self) -> bytes:
        return generate_latest(self.registry)
