"""Find and digest the JSONL file a finetune step reads. No torch here: `plan` uses it."""

from __future__ import annotations

from pathlib import Path

from llmrecipe.data.locate import named_file
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.finetune import FinetuneStep
from llmrecipe.recipe.recipe import Recipe


def finetune_files(recipe: Recipe, base_dir: Path) -> dict[str, list[ExternalFile]]:
    """For each finetune step with a `dataset`, its file with the content digest the fingerprint covers."""
    return {
        name: [named_file(step.dataset.path, base_dir, f"steps.{name}.dataset.path")]
        for name, step in recipe.steps.items()
        if isinstance(step, FinetuneStep) and step.dataset is not None
    }
