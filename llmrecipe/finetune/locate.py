"""Find and digest the JSONL file a finetune step reads. No torch here: `plan` uses it."""

from __future__ import annotations

from pathlib import Path

from llmrecipe.data.locate import sha256_file
from llmrecipe.errors import RecipeError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.finetune import FinetuneStep
from llmrecipe.recipe.recipe import Recipe


def finetune_files(recipe: Recipe, base_dir: Path) -> dict[str, list[ExternalFile]]:
    """For each finetune step with a `dataset`, its file with the content digest the fingerprint covers."""
    found: dict[str, list[ExternalFile]] = {}
    for name, step in recipe.steps.items():
        if not isinstance(step, FinetuneStep) or step.dataset is None:
            continue
        value = step.dataset.path
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.is_file():
            raise RecipeError(
                f"steps.{name}.dataset.path = '{value}': no such file ({path}); check the path (relative paths are "
                f"relative to the recipe), or override it with --set steps.{name}.dataset.path=PATH"
            )
        found[name] = [ExternalFile(source=0, name=path.name, sha256=sha256_file(path), size=path.stat().st_size,
                                    path=str(path.resolve()))]
    return found
