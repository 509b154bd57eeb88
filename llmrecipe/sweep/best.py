"""The best trial as a recipe file: the trial's recipe without its [sweep] table, written beside the sweep's recipe
as `<name>.best.toml`. Beside it, because the recipe's relative paths (data sources, suites' files) are relative
to its folder and are part of the data steps' identity: the file keeps them as written, so `llmrecipe run` of it
plans exactly the trial's steps and finds them all in the store (the workdir is pinned to the sweep's)."""

from __future__ import annotations

from pathlib import Path

from llmrecipe.recipe.load import load_recipe
from llmrecipe.sweep.toml import toml_document


def best_recipe_path(recipe_file: Path) -> Path:
    return recipe_file.with_name(f"{recipe_file.stem}.best.toml")


def write_best_recipe(recipe_file: Path, overrides: list[str], workdir: Path, header: str) -> Path:
    loaded = load_recipe(recipe_file, overrides)
    data = loaded.recipe.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude={"sweep"})
    data.setdefault("run", {})["workdir"] = str(workdir)
    data["steps"] = {name: {"kind": step.pop("kind"), **step} for name, step in data["steps"].items()}  # kind first
    path = best_recipe_path(recipe_file)
    path.write_text(toml_document(data, header), encoding="utf-8")
    return path
