"""Probe the machine for the facts a plan depends on, cheaply and without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from llmrecipe.plan.plan import Host


def probe_host() -> Host:
    gpus = gpu_count()
    return Host(cuda=gpus > 0, gpus=gpus, cpu_bf16=_cpu_has_bf16(), cpu_cores=core_count(),
                matmul_peak=measured_peaks(), torchrun_processes=torchrun_world()[1],
                torchrun_local_processes=_int_env("LOCAL_WORLD_SIZE") if launched_by_torchrun() else None,
                memory_bytes=memory_bytes(), gpu_memory_bytes=gpu_memory_bytes() if gpus else None)


def memory_bytes() -> int | None:
    """RAM this process may use: MemTotal, or the cgroup's limit when a container sets a lower one."""
    try:
        total = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):  # not Linux: the plan skips the memory check
        return None
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
    except OSError:
        return total
    return min(total, int(limit)) if limit.isdigit() else total


def gpu_memory_bytes() -> int | None:
    """Memory of the smallest visible NVIDIA GPU, asked of nvidia-smi (torch is too slow to import for a plan)."""
    try:
        answer = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        sizes = [int(line) * 2**20 for line in answer.split() if line.strip().isdigit()]  # MiB
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible and all(d.strip().isdigit() for d in visible.split(",")):
        sizes = [sizes[int(d)] for d in visible.split(",") if int(d) < len(sizes)]
    return min(sizes) if sizes else None


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


def gpu_count() -> int:
    """NVIDIA GPUs visible to this process: the driver's count, narrowed by CUDA_VISIBLE_DEVICES. Whether torch can
    use them is checked when a step starts."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    gpus = Path("/proc/driver/nvidia/gpus")  # one folder per GPU, exposed by the NVIDIA kernel driver
    installed = len(list(gpus.iterdir())) if gpus.is_dir() else (1 if Path("/proc/driver/nvidia/version").exists() else 0)
    if visible is None:
        return installed
    return min(installed, len([d for d in visible.split(",") if d.strip()]))


def cache_dir() -> Path:
    """This machine's llmrecipe cache (measured peaks, file digests): LLMRECIPE_CACHE_DIR, else the XDG cache."""
    root = os.environ.get("LLMRECIPE_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "llmrecipe"
    return Path(root)


def peak_cache_file() -> Path:
    """Where training runs record the matmul peak they measured, so the next plan's compile estimate uses it."""
    return cache_dir() / "matmul_peak.json"


def measured_peaks() -> dict[str, float]:
    try:
        peaks = json.loads(peak_cache_file().read_text())
    except (OSError, ValueError):  # none measured yet, or a file cut short: the plan uses nominal figures
        return {}
    return {k: float(v) for k, v in peaks.items() if isinstance(v, (int, float))} if isinstance(peaks, dict) else {}


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else None


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
