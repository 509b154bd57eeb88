"""Throughput of training steps and MFU against the device's measured matmul peak.

The peak is the best of several probes: the one at the start of this process, the best any run recorded on this
machine, and a fresh probe whenever the MFU would pass 1 (a first probe taken while another process had the cores
reads low). MFU is never reported above 1: if even the fresh probe leaves it there, it is capped and flagged
(`mfu_capped`), since the figure then says more about the probe than about the model.
"""

from __future__ import annotations

import time

from llmrecipe.host import measured_peaks
from llmrecipe.training.peak import matmul_peak_flops, measure_matmul_flops, peak_memory_bytes, record_peak

REPROBE_SECONDS = 0.1
"""Length of the probe taken when the MFU would pass 1."""


class Speed:
    """Wall-clock throughput of the steps timed in this process, over every session of a resumed step: the seconds
    and tokens of earlier sessions come in with the checkpoint's counters."""

    def __init__(self, device: str, precision: str, flops_per_token: int, processes: int, main: bool,
                 seconds: float = 0.0, tokens: int = 0):
        self.device, self.precision, self.flops_per_token = device, precision, flops_per_token
        self.processes, self.main = processes, main
        peak = max(matmul_peak_flops(device, precision), measured_peaks().get(f"{device}/{precision}", 0.0))
        if main:
            record_peak(device, precision, peak)
        self.peak = peak * processes
        self.capped = False
        """The MFU passed 1 even against a fresh probe, and was reported as 1."""
        self.seconds, self.tokens, self._clock = seconds, tokens, 0.0

    def start(self) -> None:
        self._clock = time.perf_counter()

    def stop(self, tokens: int) -> None:
        self.seconds += time.perf_counter() - self._clock
        self.tokens += tokens

    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def mfu(self) -> float:
        if self.peak <= 0:
            return 0.0
        if self._raw_mfu() > 1:
            self._probe_again()
        self.capped = self.capped or self._raw_mfu() > 1
        return min(self._raw_mfu(), 1.0)

    def figures(self) -> dict[str, float]:
        """The metrics that depend on wall-clock time or the machine (left out of exactness comparisons)."""
        figures = {"tokens_per_s": round(self.tokens_per_s(), 1), "mfu": round(self.mfu(), 4),
                   "memory_bytes": peak_memory_bytes(self.device)}
        return {**figures, "mfu_capped": True} if self.capped else figures

    def _raw_mfu(self) -> float:
        return self.tokens_per_s() * self.flops_per_token / self.peak

    def _probe_again(self) -> None:
        fresh = measure_matmul_flops(self.device, self.precision, REPROBE_SECONDS)
        if fresh * self.processes > self.peak:
            self.peak = fresh * self.processes
            if self.main:
                record_peak(self.device, self.precision, fresh)
