"""No recipe value makes llmrecipe write outside its workdir: names become one path component or are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmrecipe import api
from llmrecipe.errors import RecipeError
from tests.conftest import make_corpus

RECIPE = """
[run]
name = "{name}"
workdir = "work"
device = "cpu"

[steps.corpus-1]
kind = "data"
sources = [{{ path = "corpus", unit = "line" }}, {{ path = "../outside/*.txt" }}]
split = {{ val = 0.2, test = 0.0 }}
workers = 1

[steps.tok_1]
kind = "tokenizer"
data = "corpus-1"
vocab_size = 260
"""


def files_under(root: Path) -> set[Path]:
    return {Path(folder, name) for folder, _, names in os.walk(root) for name in names}


def test_a_run_writes_only_inside_its_workdir(tmp_path, monkeypatch):
    project, outside = tmp_path / "project", tmp_path / "outside"
    make_corpus(project / "corpus", documents=6, sentences=4)
    make_corpus(outside, documents=2, sentences=4)
    recipe = project / "recipe.toml"
    recipe.write_text(RECIPE.format(name="Shakespeare run v1.2 ü"))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # nothing may land in the current folder either
    before = files_under(tmp_path)

    report = api.run(api.load(recipe))

    assert [o.state for o in report.outcomes] == ["done", "done"]
    written = files_under(tmp_path) - before
    workdir = project / "work"
    assert written and all(path.is_relative_to(workdir) for path in written), sorted(written - files_under(workdir))
    records = [path.parent for path in written if path.name == "plan.json"]
    assert len(records) == 1 and records[0].parent == workdir / "runs"  # one folder below runs/, named after the run
    assert "Shakespeare run v1.2 ü" in records[0].name


@pytest.mark.parametrize("name", ["../../../../tmp/x", "a\x00b", "a/b", "a\\b", "..", ".hidden", "x\n", " x", "x ",
                                  "a" * 101, ""])
def test_run_names_that_are_not_one_safe_folder_name_are_refused(tmp_path, name):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.format(name="ok"))
    escaped = name.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    with pytest.raises(RecipeError, match="run.name = .*a run name becomes part of a folder name"):
        api.load(recipe, [f'run.name="{escaped}"'])
