"""TOML text -> dict -> (extends, --set overrides) -> validated Recipe."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from llmrecipe.errors import RecipeError
from llmrecipe.recipe.explain import did_you_mean, explain_validation_error
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
    """Set one dotted key; a number after a list's key is an index into it (`steps.corpus.sources.0.path=...`)."""
    key, sep, value = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise RecipeError(f"--set {override!r}: expected KEY=VALUE with a dotted key, e.g. steps.base.optim.lr=3e-4")
    _check_step_name(raw, parts, override)
    container: dict[str, Any] | list[Any] = raw
    for depth, part in enumerate(parts[:-1]):
        where = ".".join(parts[: depth + 1])
        container = _child(container, part, where, override, parts[depth + 1])
    _assign(container, parts[-1], parse_override_value(value.strip()), key.strip(), override)


def _check_step_name(raw: dict[str, Any], parts: list[str], override: str) -> None:
    """`steps.NAME.x` for a NAME the recipe lacks is a misspelling, unless it declares a new step's `kind`."""
    steps = raw.get("steps")
    if parts[0] != "steps" or len(parts) < 3 or not isinstance(steps, dict) or parts[1] in steps or parts[2] == "kind":
        return
    raise RecipeError(f"--set {override!r}: the recipe has no step '{parts[1]}'; {did_you_mean(parts[1], steps)} "
                      f"(a new step needs its kind first: --set steps.{parts[1]}.kind=...)")


def _child(container: dict[str, Any] | list[Any], part: str, where: str, override: str, next_part: str):
    """The table or list at `part` of `container` (a missing table key becomes an empty table)."""
    if isinstance(container, list):
        child = container[_index(container, part, where, override)]
    else:
        child = container.setdefault(part, {})
    if not isinstance(child, (dict, list)):
        raise RecipeError(f"--set {override!r}: {where} is a value, not a table or a list, so it has no "
                          f"'{next_part}'")
    return child


def _assign(container: dict[str, Any] | list[Any], part: str, value: Any, where: str, override: str) -> None:
    if isinstance(container, list):
        container[_index(container, part, where, override)] = value
    else:
        container[part] = value


def _index(items: list[Any], part: str, where: str, override: str) -> int:
    """A list index written in a dotted key: 0 to len - 1."""
    if not part.isdigit() or int(part) >= len(items):
        listed = where.rsplit(".", 1)[0]
        raise RecipeError(f"--set {override!r}: {listed} is a list of {len(items)}: give an index from 0 to "
                          f"{len(items) - 1} after it, e.g. {listed}.0")
    return int(part)
