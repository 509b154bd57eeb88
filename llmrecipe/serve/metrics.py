"""Prometheus metrics of one server: requests, errors, latency, tokens generated, queue occupancy.

Each app has its own registry, so several servers (or tests) in one process do not collide.
"""

from __future__ import annotations

import time
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self, busy: Callable[[], int], known_paths: set[str]):
        self.registry = CollectorRegistry()
        self.known_paths = known_paths
        self.requests = Counter("llmrecipe_requests", "HTTP requests answered", ["path", "status"], registry=self.registry)
        self.errors = Counter("llmrecipe_errors", "HTTP answers with status 400 or more", ["path", "status"],
                              registry=self.registry)
        self.latency = Histogram("llmrecipe_request_seconds", "Time from request to the end of the answer (streams "
                                 "included)", ["path"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tokens = Counter("llmrecipe_generated_tokens", "Tokens generated", registry=self.registry)
        self.capped = Counter("llmrecipe_max_tokens_capped", "Requests whose max_tokens was more than the context "
                              "leaves after the prompt, so they stop earlier than asked", registry=self.registry)
        Gauge("llmrecipe_busy_slots", "Requests waiting or decoding", registry=self.registry).set_function(busy)

    def observe(self, path: str, status: int, seconds: float) -> None:
        path = path if path in self.known_paths else "other"  # unknown paths must not grow the label set
        self.requests.labels(path, str(status)).inc()
        if status >= 400:
            self.errors.labels(path, str(status)).inc()
        self.latency.labels(path).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Plain ASGI middleware: it sees the status and the end of streamed bodies, and cancels nothing."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), [500]

        async def watch(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            self.metrics.observe(scope["path"], status[0], time.perf_counter() - started)
