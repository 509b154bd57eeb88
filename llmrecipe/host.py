"""Probe the machine for the facts a plan depends on, cheaply and without importing torch."""

from __future__ import annotations

import os
from pathlib import Path

from llmrecipe.plan.plan import Host


def probe_host() -> Host:
    return Host(cuda=_has_cuda(), cpu_bf16=_cpu_has_bf16(), torchrun_processes=torchrun_world()[1])


def launched_by_torchrun() -> bool:
    return torchrun_world()[1] is not None


def torchrun_world() -> tuple[int, int | None]:
    """(RANK, WORLD_SIZE) when torchrun (or another torch.distributed launcher) started this process, else (0, None)."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    return 0, None


def core_count() -> int:
    """The CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _has_cuda() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    # The NVIDIA kernel driver exposes this file; whether torch can use it is checked when a step starts.
    return Path("/proc/driver/nvidia/version").exists()


def _cpu_has_bf16() -> bool:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no cheap way to know, so stay with fp32
        return False
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return bool(flags & {"avx512_bf16", "amx_bf16"})
