"""The whole recipe: a [run] table and named [steps.NAME] tables, told apart by `kind`."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from llmrecipe.recipe.base import MAX_PROCESSES, RunName, Section, StepName
from llmrecipe.recipe.data import DataStep
from llmrecipe.recipe.evaluate import EvaluateStep
from llmrecipe.recipe.export import ExportStep
from llmrecipe.recipe.finetune import FinetuneStep
from llmrecipe.recipe.import_step import ImportStep
from llmrecipe.recipe.pretrain import PretrainStep
from llmrecipe.recipe.sweep import SweepConfig
from llmrecipe.recipe.tokenizer import TokenizerStep

StepConfig = Annotated[
    Union[DataStep, TokenizerStep, PretrainStep, ImportStep, FinetuneStep, EvaluateStep, ExportStep],
    Field(discriminator="kind"),
]

STEP_KINDS: dict[str, type[Section]] = {
    "data": DataStep,
    "tokenizer": TokenizerStep,
    "pretrain": PretrainStep,
    "import": ImportStep,
    "finetune": FinetuneStep,
    "evaluate": EvaluateStep,
    "export": ExportStep,
}
"""Every step kind a user can write, by its `kind` value."""


class RunConfig(Section):
    """Settings of the whole run."""

    name: RunName = "llmrecipe"
    """Name of the run; shown in the plan and part of the run record's folder name (`runs/<time>-<name>-<id>`), so
    it is one folder-name component: letters, digits, `_`, `.`, `-` and spaces, at most 100 characters."""
    seed: int = Field(default=1337, ge=0, le=2**32 - 1)
    """One seed for everything: data split order, initialization, sampling. Same recipe + seed, same bytes. From 0
    to 2^32 - 1, the range every random generator the steps use accepts (each derives further seeds from it)."""
    workdir: str | None = None
    """Where the artifact store and run records live (relative to the recipe file); default `./.llmrecipe`."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto` picks CUDA when present, else the CPU."""
    nproc: int = Field(default=1, ge=1, le=MAX_PROCESSES)
    """Processes that train together through torch.distributed (gloo on CPU, NCCL on GPU); each takes its share of
    every step's batch. The pretrain step starts the processes itself on this machine; under `torchrun` the launch
    sets the count (leave this at 1 or give the same number)."""
    engine: Literal["local", "ray"] = "local"
    """Where data steps run their work: `local` worker processes on this machine, or `ray` tasks on a Ray cluster
    (`pip install 'llmrecipe[ray]'`). Outputs are byte-identical either way, so the choice is not fingerprinted."""
    ray_address: str | None = None
    """With engine = "ray": the cluster to join (`auto`, `ray://host:10001`, `host:6379`); unset uses the environment's
    RAY_ADDRESS, else starts a Ray instance on this machine for the run."""
    max_time: str | None = None
    """Stop cleanly after this long, e.g. "3h50m", "90m" or "1d2h": a training step saves a checkpoint first, and
    `llmrecipe run` exits with code 75 ("run again to continue"). Set it a little under a batch scheduler's time
    limit; the next run of the same command resumes. Not part of any fingerprint."""

    @field_validator("max_time")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and duration_seconds(value) is None:
            raise ValueError("not a duration: write days, hours, minutes and seconds like \"3h50m\", \"90m\" or \"45s\"")
        return value

    @property
    def max_seconds(self) -> float | None:
        return None if self.max_time is None else duration_seconds(self.max_time)


DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?$")


def duration_seconds(text: str) -> float | None:
    """The seconds of a duration like "3h50m" (13800.0); None when `text` is not one, or is zero."""
    match = DURATION.match(text.strip())
    if match is None or not any(match.groups()):
        return None
    days, hours, minutes, seconds = (float(part) if part else 0.0 for part in match.groups())
    total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    return total if total > 0 else None


class Recipe(Section):
    """A complete recipe, as validated from TOML."""

    run: RunConfig = RunConfig()
    steps: dict[StepName, StepConfig] = Field(min_length=1)
    """The steps, by name. Order does not matter: the plan orders them by their references."""
    sweep: SweepConfig | None = None
    """A search over this recipe's values, run by `llmrecipe sweep` (and ignored by `llmrecipe run`)."""
