"""A tiny recipe with every step kind (data with both dedups, tokenizer, tokenize, pretrain, finetune, evaluate,
export), run through the CLI as a user runs it, and the comparison of two workdirs' stores file by file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import REPO, write_tiny_recipe
from tests.test_end_to_end import EVAL_AND_EXPORT
from tests.test_finetune import SFT_STEP, write_pairs

EVERY_KIND = EVAL_AND_EXPORT + SFT_STEP

WALL_CLOCK = ("tokens_per_s", "mfu", "memory_bytes")
"""Fields of a training step's metrics.jsonl lines that measure the machine, not the model: the one exemption
from byte identity (the training loop keeps them out of its exactness comparisons for the same reason)."""


def write_full_recipe(folder: Path, steps: int = 40, checkpoint_every: int = 5) -> Path:
    recipe = write_tiny_recipe(folder, steps=steps, checkpoint_every=checkpoint_every, extra=EVERY_KIND, edits=(
        ('{ op = "dedup_exact" }', '{ op = "dedup_exact" }, { op = "dedup_near" }'),
    ))
    write_pairs(folder)
    return recipe


def run_cli(recipe: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmrecipe", "run", str(recipe), *args], cwd=recipe.parent,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@dataclass
class Comparison:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    differences: list[str] = field(default_factory=list)
    wall_clock_only: list[str] = field(default_factory=list)
    """metrics.jsonl files equal once the WALL_CLOCK fields are left out."""


def compare_stores(reference: Path, other: Path) -> Comparison:
    """Every file of every entry in two workdirs' stores, byte for byte (manifests by their file lists, since they
    also hold timings and the run id)."""
    result = Comparison()
    ours, theirs = _entries(reference), _entries(other)
    if set(ours) != set(theirs):
        result.differences.append(f"entries differ: only in reference {sorted(set(ours) - set(theirs))}, "
                                  f"only in other {sorted(set(theirs) - set(ours))}")
    for fingerprint in sorted(set(ours) & set(theirs)):
        result.entries += 1
        a, b = ours[fingerprint], theirs[fingerprint]
        names_a, names_b = _files(a), _files(b)
        if names_a != names_b:
            result.differences.append(f"{fingerprint[:12]}: file lists differ: {sorted(names_a ^ names_b)}")
        for name in sorted(names_a & names_b):
            result.files += 1
            result.bytes += (a / name).stat().st_size
            _compare_file(a, b, name, result)
    return result


def _compare_file(a: Path, b: Path, name: str, result: Comparison) -> None:
    where = f"{a.name[:12]}/{name}"
    if name == "manifest.json":
        files_a = json.loads((a / name).read_text())["files"]
        files_b = json.loads((b / name).read_text())["files"]
        differing = sorted(f for f in files_a if files_a[f] != files_b.get(f) and not f.endswith("metrics.jsonl"))
        if differing or set(files_a) != set(files_b):
            result.differences.append(f"{where}: listed digests differ for {differing}")
        return
    bytes_a, bytes_b = (a / name).read_bytes(), (b / name).read_bytes()
    if bytes_a == bytes_b:
        return
    if name.endswith("metrics.jsonl") and _without_wall_clock(bytes_a) == _without_wall_clock(bytes_b):
        result.wall_clock_only.append(where)
        return
    result.differences.append(f"{where}: bytes differ")


def _without_wall_clock(data: bytes) -> list[dict]:
    lines = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    return [{k: v for k, v in line.items() if k not in WALL_CLOCK} for line in lines]


def _entries(workdir: Path) -> dict[str, Path]:
    store = workdir / "store"
    return {p.name: p for p in store.iterdir() if p.is_dir()} if store.is_dir() else {}


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
