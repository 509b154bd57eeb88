"""The executor table: step kind -> the module that runs it, imported only when a step of that kind runs.

Each module has `run(spec: dict, ctx: StepContext) -> dict` returning summary metrics (JSON). Bump a
kind's version when its executor changes what it writes: every fingerprint of that kind changes, so
stored artifacts of the old executor are not reused.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from llmrecipe.run.context import StepContext


@dataclass(frozen=True)
class Executor:
    module: str
    version: int
    joins_group: str | None = None
    """The module's function that one process of a torch.distributed group runs, `f(spec, ctx, world)`, for
    executors that train in a group (see llmrecipe/steps/processes.py)."""

    def __call__(self, spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        return importlib.import_module(self.module).run(spec, ctx)

    def join(self, spec: dict[str, Any], ctx: StepContext, world: Any) -> None:
        getattr(importlib.import_module(self.module), self.joins_group)(spec, ctx, world)


EXECUTORS: dict[str, Executor] = {
    # 6: dropped.parquet lists its rows stage by stage (its order no longer follows the batch size)
    "data": Executor("llmrecipe.steps.data", version=6),
    "tokenizer": Executor("llmrecipe.steps.tokenizer", version=1),
    "tokenize": Executor("llmrecipe.steps.tokenize", version=1),
    # 6: the one trainer (loss.png drawn by llmrecipe/plots.py, checkpoint digests)
    "pretrain": Executor("llmrecipe.steps.pretrain", version=6, joins_group="train_and_save"),
    "import": Executor("llmrecipe.steps.import_checkpoint", version=1),
    # 4: the one trainer (epoch order, fused AdamW for LoRA, encoders' padding masked instead of grouped)
    # 5: sft fits long conversations keeping the response; classify heads of decoders have no bias (as HF's)
    "finetune": Executor("llmrecipe.steps.finetune", version=5, joins_group="finetune_in_group"),
    "evaluate": Executor("llmrecipe.steps.evaluate", version=5),  # 5: generation suites through the KV-cache engine
    "export": Executor("llmrecipe.steps.export", version=4),  # 4: the decoder graph traced from the model's forward
}

EXECUTOR_VERSIONS: dict[str, int] = {kind: executor.version for kind, executor in EXECUTORS.items()}
