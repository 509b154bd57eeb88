"""Throughput of training steps and MFU against the device's measured matmul peak."""

from __future__ import annotations

import time

from llmrecipe.training.peak import matmul_peak_flops, peak_memory_bytes, record_peak


class Speed:
    """Wall-clock throughput of the steps timed in this process, over every session of a resumed step: the seconds
    and tokens of earlier sessions come in with the checkpoint's counters."""

    def __init__(self, device: str, precision: str, flops_per_token: int, processes: int, main: bool,
                 seconds: float = 0.0, tokens: int = 0):
        self.device, self.flops_per_token = device, flops_per_token
        peak = matmul_peak_flops(device, precision)
        if main:
            record_peak(device, precision, peak)
        self.peak = peak * processes
        self.seconds, self.tokens, self._clock = seconds, tokens, 0.0

    def start(self) -> None:
        self._clock = time.perf_counter()

    def stop(self, tokens: int) -> None:
        self.seconds += time.perf_counter() - self._clock
        self.tokens += tokens

    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def mfu(self) -> float:
        return self.tokens_per_s() * self.flops_per_token / self.peak if self.peak > 0 else 0.0

    def figures(self) -> dict[str, float]:
        """The metrics that depend on wall-clock time or the machine (left out of exactness comparisons)."""
        return {"tokens_per_s": round(self.tokens_per_s(), 1), "mfu": round(self.mfu(), 4),
                "memory_bytes": peak_memory_bytes(self.device)}
