"""Find and digest the files evaluation suites read (JSONL sets, text files). No torch here: `plan` uses it."""

from __future__ import annotations

from pathlib import Path

from llmrecipe.data.locate import named_file
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
            files.append(named_file(value, base_dir, f"steps.{name}.suites.{suite_name}.{field}", source=index))
        found[name] = files
    return found
