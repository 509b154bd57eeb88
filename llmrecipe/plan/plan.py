"""The compiled plan: steps in run order, each with its resolved spec and content fingerprint."""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from llmrecipe.models.shape import ModelShape


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Host(Frozen):
    """Facts about the machine that the plan depends on, probed without importing torch (llmrecipe/host.py)."""

    cuda: bool = False
    gpus: int = 0
    """NVIDIA GPUs this process may use (CUDA_VISIBLE_DEVICES respected)."""
    cpu_bf16: bool = False
    """The CPU has native bf16 matmuls (AVX512-BF16 or AMX), where bf16 autocast is about 2x fp32."""
    cpu_cores: int = 1
    matmul_peak: dict[str, float] = {}
    """`device/precision` -> the best matmul FLOP/s a training run measured on this machine (cached by the trainer)."""
    torchrun_processes: int | None = None
    """WORLD_SIZE when this process is one of a torchrun launch: the processes that train together."""
    torchrun_local_processes: int | None = None
    """LOCAL_WORLD_SIZE of a torchrun launch: its processes on this machine."""
    memory_bytes: int | None = None
    """Memory this process may use on the CPU side: the machine's RAM, or its container's limit when lower."""
    gpu_memory_bytes: int | None = None
    """Memory of the smallest visible GPU (None: no GPU, or the driver did not say)."""

    def local_processes(self, nproc: int) -> int:
        """Training processes on this machine: a torchrun launch's per-node count, else the `nproc` we start."""
        return self.torchrun_local_processes or nproc


class ExternalFile(Frozen):
    """A file read from outside the store. Its content (not its location) enters the fingerprint."""

    source: int
    """Index of the source in the step's `sources` list."""
    name: str
    """Path relative to the source's root folder: stable across machines and checkouts."""
    sha256: str
    size: int
    path: str
    """Absolute path on this machine, for the executor; left out of the fingerprint."""


class CheckpointFacts(Frozen):
    """What the plan knows of an `import` step's checkpoint, read from its files without torch
    (llmrecipe/checkpoints/locate.py)."""

    folder: str
    """The checkpoint's folder on this machine."""
    shape: ModelShape
    tokens: int
    """Ids its tokenizer produces (at most the embedding rows)."""
    stored_dtype: str
    """How the weights are stored: bf16, fp16 or fp32."""
    chat_template: str | None
    """The chat template it brings (tokenizer_config.json's `chat_template` or chat_template.jinja), if any."""
    eot_token: str | None
    """The token that ends a text (a decoder's end-of-sequence token; an encoder's [CLS], read first)."""


class PlanStep(Frozen):
    name: str
    kind: str
    implicit: bool = False
    """True for steps the compiler inserted (e.g. `corpus@tok`, the tokenized corpus)."""
    inputs: dict[str, str] = {}
    """Role (`data`, `tokenizer`, `tokens`, `model`) -> name of the upstream step."""
    spec: dict[str, Any]
    """The resolved spec the executor receives: the user's settings plus every derived value."""
    derived: dict[str, Any] = {}
    """The derived values, shown by `llmrecipe plan` (also inside `spec`)."""
    external: list[ExternalFile] = []
    executor_version: int
    fingerprint: str


LISTED_FILES = 100
"""External files a step lists one by one in `Plan.record()`; a step reading more is summarised per source."""


def summarise_files(files: list[ExternalFile]) -> list[dict[str, Any]]:
    """Per source: how many files, their bytes, and one digest over every (name, sha256), so two records still
    compare equal exactly when the inputs were the same."""
    summary = []
    for source in sorted({f.source for f in files}):
        mine = sorted((f for f in files if f.source == source), key=lambda f: f.name)
        listing = hashlib.sha256("".join(f"{f.name}\t{f.sha256}\n" for f in mine).encode("utf-8", "surrogatepass"))
        summary.append({"source": source, "files": len(mine), "bytes": sum(f.size for f in mine),
                        "listing_sha256": listing.hexdigest(), "first": [f.name for f in mine[:3]]})
    return summary


class Plan(Frozen):
    name: str
    seed: int
    workdir: str
    device: Literal["cpu", "cuda"]
    steps: list[PlanStep]
    warnings: list[str] = []
    """Things that may go wrong on this machine but need not (e.g. training memory close to the device's), shown
    by `validate`, `plan` and `run`."""

    def record(self) -> dict[str, Any]:
        """The plan as a run record keeps it: whole, except that a step reading more than LISTED_FILES files gets a
        summary per source instead of a line per file (100k small files would make every record tens of MB)."""
        data = self.model_dump(mode="json")
        for step, dumped in zip(self.steps, data["steps"]):
            if len(step.external) > LISTED_FILES:
                dumped["external"] = summarise_files(step.external)
        return data

    def step(self, name: str) -> PlanStep:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def downstream_of(self, names: set[str]) -> set[str]:
        """The named steps and every step that depends on them, directly or not."""
        found = set(names)
        for step in self.steps:  # run order: a step comes after all of its inputs
            if any(upstream in found for upstream in step.inputs.values()):
                found.add(step.name)
        return found

    def upstream_of(self, names: set[str]) -> set[str]:
        """The named steps and everything they need."""
        found = set(names)
        for step in reversed(self.steps):
            if step.name in found:
                found.update(step.inputs.values())
        return found
