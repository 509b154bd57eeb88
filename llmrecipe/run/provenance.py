"""A run record's manifest.json: enough to say what produced each artifact and to check it later.

The resolved recipe; every step's fingerprint, state and output digests; package versions; the machine (CPU and
GPU models); the seed; the git commit of the recipe's folder when it is a repository; and what may differ in a
rerun. All of it is read without importing torch: versions from package metadata, hardware from /proc.
"""

from __future__ import annotations

import copy
import functools
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from llmrecipe.plan.plan import Plan
from llmrecipe.run.store import Store

PACKAGES = ("llmrecipe", "torch", "polars", "numpy", "tokenizers", "safetensors", "onnx", "onnxruntime",
            "onnxruntime-gpu", "onnxscript", "pydantic")
TRAINING_KINDS = ("pretrain", "finetune")


def run_manifest(plan: Plan, run_id: str, outcome: str, states: dict[str, str], recipe: dict[str, Any],
                 recipe_file: Path) -> dict[str, Any]:
    """`states`: each step's state in this run (cached, done, failed, interrupted, skipped, not reached)."""
    store = Store(Path(plan.workdir))
    steps = []
    for step in plan.steps:
        manifest = store.manifest(step.fingerprint) or {}
        steps.append({"step": step.name, "kind": step.kind, "fingerprint": step.fingerprint,
                      "state": states.get(step.name, "not reached"), "files": manifest.get("files")})
    return {
        "run_id": run_id,
        "outcome": outcome,
        "recipe_file": str(recipe_file),
        "recipe": recipe,
        "seed": plan.seed,
        "device": plan.device,
        "steps": steps,
        "environment": environment(plan.device),
        "git": git_state(recipe_file),
        "reproducibility": reproducibility(plan),
    }


@functools.lru_cache(maxsize=None)
def _environment(device: str) -> dict[str, Any]:
    """Versions and machine facts, read from package metadata and /proc so that torch is not imported for them
    (once per process: reading every package's metadata takes tens of milliseconds)."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu_models": gpu_models(),
        "device": device,
        "packages": versions,
    }


def environment(device: str) -> dict[str, Any]:
    return copy.deepcopy(_environment(device))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_models() -> list[str]:
    """One entry per NVIDIA GPU the kernel driver shows (its `information` file), empty without one."""
    models = []
    for information in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            for line in information.read_text().splitlines():
                if line.startswith("Model:"):
                    models.append(line.split(":", 1)[1].strip())
        except OSError:
            continue
    return models


def git_state(recipe_file: Path) -> dict[str, Any] | None:
    """The commit checked out in the recipe's folder, and whether the recipe differs from it; None outside git."""
    folder = recipe_file.resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    changes = git("status", "--porcelain", "--", recipe_file.resolve().name)
    return {"commit": commit, "repository": git("rev-parse", "--show-toplevel"),
            "recipe_changed_since_commit": bool(changes)}


def reproducibility(plan: Plan) -> dict[str, Any]:
    """What a rerun of this plan may change, said rather than hidden behind a shared fingerprint."""
    training = {step.name: step.spec.get("nproc", 1) for step in plan.steps if step.kind in TRAINING_KINDS}
    return {"same_bytes_on_rerun": plan.device == "cpu", "training_processes": training, "notes": notes(plan)}


def notes(plan: Plan) -> list[str]:
    """Lines for `llmrecipe plan` and the manifest about where the same recipe may give other bytes."""
    if not any(step.kind in TRAINING_KINDS for step in plan.steps):
        return []
    if plan.device == "cuda":
        return ["on CUDA, training is not bit-reproducible: GPU kernels (attention and embedding backward, "
                "reductions across processes) add in varying order, so a rerun, another process count or another "
                "GPU model gives slightly different weights; the fingerprint leaves the process count out, since fixing "
                "it would not make the bytes repeat (the manifest records the count and GPU model of each run)"]
    return ["on CPUs a rerun gives the same bytes; another process count (run.nproc, torchrun) changes only the "
            "order of float sums, keeps the fingerprint, and gives weights that agree up to rounding"]
