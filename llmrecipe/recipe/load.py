"""TOML text -> dict -> (extends, --set overrides) -> validated Recipe."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmrecipe.errors import RecipeError
from llmrecipe.recipe.explain import explain_validation_error
from llmrecipe.recipe.recipe import Recipe

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class LoadedRecipe:
    recipe: Recipe
    path: Path
    """The recipe file; relative paths inside the recipe are relative to its folder."""

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def load_recipe(path: str | Path, overrides: list[str] = ()) -> LoadedRecipe:
    """Read a recipe file, merge what it extends, apply `--set KEY=VALUE` overrides and validate it."""
    path = Path(path).resolve()
    raw = _read_with_parents(path, seen=())
    for override in overrides:
        _apply_override(raw, override)
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as error:
        raise RecipeError(explain_validation_error(error, Recipe, source=path.name)) from None
    return LoadedRecipe(recipe=recipe, path=path)


MAX_RECIPE_BYTES = 10_000_000
"""A recipe is a small text file; anything bigger (or endless, like /dev/zero) is not one."""


def _read_toml(path: Path) -> dict[str, Any]:
    if path.exists() and not path.is_file():
        raise RecipeError(f"{path}: not a regular file; give the path of a TOML recipe file")
    try:
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise RecipeError(f"{path}: {path.stat().st_size} bytes is no recipe (at most {MAX_RECIPE_BYTES}); "
                              "check the path")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file; check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise RecipeError(f"{path}: cannot read it as a UTF-8 TOML file ({error})") from None
    return _parse_toml(text, path.name)


def _parse_toml(text: str, where: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise RecipeError(f"{where}: not valid TOML: {error}") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise RecipeError(f"{where}: arrays or tables nest too deeply to read (hundreds of levels); a recipe needs a "
                          "few, so look for runaway brackets") from None


def _read_with_parents(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """A recipe with `extends = "parent.toml"` is the parent deep-merged with the child's own values."""
    if path in seen:
        chain = " -> ".join(p.name for p in (*seen, path))
        raise RecipeError(f"extends: recipes extend each other in a loop ({chain}); break the loop")
    data = _read_toml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise RecipeError(f"{path.name}: extends = {parent!r}: expected the path of one recipe file, as a string")
    return deep_merge(_read_with_parents((path.parent / parent).resolve(), (*seen, path)), data)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; any other value (lists included) is replaced whole."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def parse_override_value(text: str) -> Any:
    """`3e-4` -> float, `true` -> bool, `[1, 2]` -> list, `"x"` -> str; anything that is not TOML is a string."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text
    except RecursionError:
        raise RecipeError(f"--set value {text[:40]!r}...: nests too deeply to read; a recipe value needs a few "
                          "levels") from None


def _apply_override(raw: dict[str, Any], override: str) -> None:
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise RecipeError(f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. steps.base.optim.lr=3e-4")
    table = raw
    for depth, part in enumerate(parts[:-1]):
        child = table.setdefault(part, {})
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise RecipeError(f"--set {override!r}: {where} is a value, not a table, so it has no key '{parts[depth + 1]}'")
        table = child
    table[parts[-1]] = parse_override_value(value.strip())
