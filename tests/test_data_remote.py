"""Sources on fsspec file systems: a `memory://` or `file://` source is listed, digested and read like a local
folder, with the same outputs."""

from __future__ import annotations

import fsspec
import pytest

from llmrecipe.data.locate import external_files
from llmrecipe.errors import RecipeError
from llmrecipe.recipe.recipe import Recipe
from tests.data_helpers import assert_same_outputs, outputs_of, planted_corpus, run_step, spec_for


def recipe_reading(path: str, glob: str = "*.jsonl") -> Recipe:
    return Recipe.model_validate({"run": {"name": "r"}, "steps": {"corpus": {
        "kind": "data", "sources": [{"path": path, "glob": glob}]}}})


@pytest.fixture
def local(tmp_path):
    files = planted_corpus(tmp_path / "src", docs=1_500, files=3)
    return files, outputs_of(run_step(tmp_path / "local", files, spec_for(tmp_path / "src")))


@pytest.mark.parametrize("protocol, workers", [("memory", 1), ("file", 2)])
def test_a_source_on_an_fsspec_file_system_gives_the_local_outputs(tmp_path, local, protocol, workers):
    """memory:// lives in this process only (read here with one worker); file:// is seen by worker processes."""
    files, expected = local
    fs = fsspec.filesystem(protocol)
    root = f"/corpus-{tmp_path.name}" if protocol == "memory" else str(tmp_path / "remote")
    fs.mkdirs(f"{root}/nested", exist_ok=True)
    for file in files:
        with open(file.path, "rb") as source, fs.open(f"{root}/{file.name}", "wb") as target:
            target.write(source.read())
    fs.pipe(f"{root}/.hidden.jsonl", b'{"text": "not read"}\n')
    fs.pipe(f"{root}/nested/notes.txt", b"not matched\n")
    found = external_files(recipe_reading(f"{protocol}://{root}"), tmp_path)["corpus"]
    assert [(f.name, f.sha256, f.size) for f in found] == [(f.name, f.sha256, f.size) for f in files]
    assert all(f.path.startswith(f"{protocol}://") for f in found)
    spec = spec_for(tmp_path / "src", workers=workers)
    spec["sources"] = [{"path": f"{protocol}://{root}", "glob": "*.jsonl"}]
    assert_same_outputs(outputs_of(run_step(tmp_path / protocol, found, spec)), expected)


def test_a_missing_remote_folder_or_an_empty_glob_is_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match=r"steps.corpus.sources\[0\].path = 'memory://nowhere': no such file"):
        external_files(recipe_reading("memory://nowhere"), tmp_path)
    fsspec.filesystem("memory").pipe("/some/a.txt", b"x")
    with pytest.raises(RecipeError, match=r"no files match '\*.jsonl'"):
        external_files(recipe_reading("memory://some"), tmp_path)
