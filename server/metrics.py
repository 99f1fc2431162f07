"""Prometheus metrics, one registry per app (several apps can live in one test process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily

PREFIX = "sft_eraser_"
TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            PREFIX + "requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=r,
        )
        self.errors = Counter(
            PREFIX + "errors", "error responses by OpenAI error type", ["type"], registry=r
        )
        self.queue_depth = Gauge(PREFIX + "queue_depth", "requests waiting for a slot", registry=r)
        self.running = Gauge(PREFIX + "running_requests", "requests being generated", registry=r)
        self.ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "from request arrival to its first generated token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter(PREFIX + "prompt_tokens", "prompt tokens", registry=r)
        self.generated_tokens = Counter(PREFIX + "generated_tokens", "tokens generated", registry=r)
        self.eraser_use = Counter(
            PREFIX + "eraser_requests", "requests that used each eraser", ["eraser"], registry=r
        )

    def watch_engine(self, engine) -> None:
        self.queue_depth.set_function(lambda: engine.waiting)
        self.running.set_function(lambda: engine.running)
        self.registry.register(_EngineCounters(engine))

    def watch_store(self, view) -> None:
        """A store shared by replicas (server/replica.py): reachable or not, and which
        generation of it this replica serves."""
        up = Gauge(
            PREFIX + "store_up",
            "1 if the last poll reached the eraser store",
            registry=self.registry,
        )
        up.set_function(lambda: float(view.lost_since is None))
        generation = Gauge(
            PREFIX + "store_generation",
            "the eraser store's change counter as this replica last saw it",
            registry=self.registry,
        )
        generation.set_function(lambda: view.generation)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# Counters an engine may report (GenerationEngine.counters): name -> help. An engine reports
# those it has; the built-in one all five, vLLM's the prefix cache's two.
ENGINE_COUNTERS = {
    "decode_steps": "decode forwards run",
    "decode_rows": "rows over all decode forwards (rows / steps: the mean batch size)",
    "prefills": "prefill forwards run",
    "prefix_cache_queried_tokens": "prompt tokens looked up in the engine's prefix cache "
    "(built-in: eraser tokens; vLLM: every prompt token)",
    "prefix_cache_hit_tokens": "of those, tokens whose KV was cached (hits / queried: hit rate)",
}


class _EngineCounters:
    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        for name, value in self.engine.counters().items():
            yield CounterMetricFamily(PREFIX + name, ENGINE_COUNTERS[name], value=value)
