"""The whole recipe: a [run] table and named [steps.NAME] tables, told apart by `kind`."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from llmrecipe.recipe.base import MAX_PROCESSES, RunName, Section, StepName
from llmrecipe.recipe.data import DataStep
from llmrecipe.recipe.evaluate import EvaluateStep
from llmrecipe.recipe.export import ExportStep
from llmrecipe.recipe.finetune import FinetuneStep
from llmrecipe.recipe.pretrain import PretrainStep
from llmrecipe.recipe.tokenizer import TokenizerStep

StepConfig = Annotated[
    Union[DataStep, TokenizerStep, PretrainStep, FinetuneStep, EvaluateStep, ExportStep],
    Field(discriminator="kind"),
]

STEP_KINDS: dict[str, type[Section]] = {
    "data": DataStep,
    "tokenizer": TokenizerStep,
    "pretrain": PretrainStep,
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


class Recipe(Section):
    """A complete recipe, as validated from TOML."""

    run: RunConfig = RunConfig()
    steps: dict[StepName, StepConfig] = Field(min_length=1)
    """The steps, by name. Order does not matter: the plan orders them by their references."""
