"""Find and digest the files evaluation suites read (JSONL sets, text files). No torch here: `plan` uses it."""

from __future__ import annotations

from pathlib import Path

from llmrecipe.data.locate import sha256_file
from llmrecipe.errors import RecipeError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.evaluate import SUITES_WITH_DATA, EvaluateStep
from llmrecipe.recipe.recipe import Recipe


def evaluate_files(recipe: Recipe, base_dir: Path) -> dict[str, list[ExternalFile]]:
    """For each evaluate step, the file of every suite that reads one; `source` is the suite's position."""
    found: dict[str, list[ExternalFile]] = {}
    for name, step in recipe.steps.items():
        if not isinstance(step, EvaluateStep):
            continue
        files = []
        for index, (suite_name, suite) in enumerate(step.named_suites().items()):
            field = SUITES_WITH_DATA.get(suite.type)
            value = getattr(suite, field) if field else None
            if value is None:
                continue
            path = Path(value).expanduser()
            path = path if path.is_absolute() else base_dir / path
            if not path.is_file():
                raise RecipeError(
                    f"steps.{name}.suites.{suite_name}.{field} = '{value}': no such file ({path}); check the path "
                    f"(relative paths are relative to the recipe), or override it with --set "
                    f"steps.{name}.suites.{suite_name}.{field}=PATH"
                )
            files.append(
                ExternalFile(
                    source=index, name=path.name, sha256=sha256_file(path), size=path.stat().st_size, path=str(path)
                )
            )
        found[name] = files
    return found
