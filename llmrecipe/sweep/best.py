"""The best trial as a recipe file that runs anywhere: the trial's resolved recipe without its [sweep] table, its
relative paths made absolute (the file lives in the sweep's folder, not beside the recipe) and the sweep's workdir
pinned, so `llmrecipe run best.toml` finds the trial's steps in the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmrecipe.recipe.evaluate import SUITES_WITH_DATA
from llmrecipe.recipe.load import load_recipe
from llmrecipe.sweep.toml import toml_document


def best_recipe_text(recipe_file: Path, overrides: list[str], workdir: Path, header: str) -> str:
    loaded = load_recipe(recipe_file, overrides)
    data = loaded.recipe.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"sweep"})
    data.setdefault("run", {})["workdir"] = str(workdir)
    for name, step in data["steps"].items():
        _absolute_paths(step, loaded.base_dir)
        data["steps"][name] = {"kind": step.pop("kind"), **step}  # the kind first, as people write steps
    return toml_document(data, header)


def _absolute_paths(step: dict[str, Any], base: Path) -> None:
    """Every field a step reads a file by (sources' `path`, suites' data files, a fine-tune's dataset)."""
    def absolute(value: str) -> str:
        return value if "://" in value or Path(value).is_absolute() else str((base / value).resolve())

    for source in step.get("sources", []):
        if source.get("path") is not None:
            source["path"] = absolute(source["path"])
    suites = step.get("suites")
    for suite in suites.values() if isinstance(suites, dict) else ():
        field = SUITES_WITH_DATA.get(suite.get("type", ""))
        if field and suite.get(field) is not None:
            suite[field] = absolute(suite[field])
    if isinstance(step.get("dataset"), dict) and step["dataset"].get("path") is not None:
        step["dataset"]["path"] = absolute(step["dataset"]["path"])
