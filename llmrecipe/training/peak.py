"""The device's measured matmul throughput, the denominator of model FLOPs utilization (MFU).

Measured rather than looked up: CPU peaks depend on cores, clocks and instruction sets (AMX, AVX512-BF16) that
no table knows, and a measured peak tells what the hardware really gives a large matmul on this machine.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import time

import torch

from llmrecipe.host import peak_cache_file

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@functools.cache
def matmul_peak_flops(device: str, precision: str, seconds: float = 0.3) -> float:
    """`measure_matmul_flops`, measured once per process."""
    return measure_matmul_flops(device, precision, seconds)


def measure_matmul_flops(device: str, precision: str, seconds: float) -> float:
    """FLOP/s of the fastest of repeated square matmuls in `precision` within `seconds`.

    Each matmul is timed alone and the best counts: on a shared machine another process takes the cores now and
    then, and an average (or a batch of matmuls) would report that as a slower peak, and an MFU above 1 later.
    """
    n = 4096 if device == "cuda" else 1024  # a CPU does 1024^3 in ~1-20 ms: many samples, still big enough
    a = torch.randn(n, n, device=device).to(DTYPES[precision])  # (n, n)
    b = torch.randn(n, n, device=device).to(DTYPES[precision])
    a @ b  # warm-up: kernel selection, page faults
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _synchronize(device)
        start = time.perf_counter()
        a @ b
        _synchronize(device)
        best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def record_peak(device: str, precision: str, flops: float) -> None:
    """Remember the best peak measured on this machine, for the plan's compile estimate (llmrecipe/host.py reads
    it). Best effort: a cache that cannot be written only leaves the plan with its nominal figure."""
    path = peak_cache_file()
    key = f"{device}/{precision}"
    try:
        peaks = json.loads(path.read_text()) if path.is_file() else {}
        if not isinstance(peaks, dict) or flops > float(peaks.get(key, 0.0)):
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f"{path.name}.{os.getpid()}")
            partial.write_text(json.dumps({**(peaks if isinstance(peaks, dict) else {}), key: flops}))
            os.replace(partial, path)
    except (OSError, ValueError):
        pass


def peak_memory_bytes(device: str) -> int:
    """Peak memory of this process: allocated tensors on CUDA, resident set size on a CPU."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
