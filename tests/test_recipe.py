"""The recipe layer: TOML in, a validated Recipe or one clear line per problem out."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmrecipe.cli import main
from llmrecipe.errors import RecipeError
from llmrecipe.recipe.load import load_recipe, parse_override_value


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.err


def test_tiny_recipe_loads(tiny_recipe: Path):
    recipe = load_recipe(tiny_recipe).recipe
    assert recipe.run.seed == 7
    assert recipe.steps["base"].model.d_model == 32
    assert recipe.steps["base"].optim.lr == 1e-2


def test_cycle_is_reported_with_exit_2(tmp_path, capsys):
    path = tmp_path / "cycle.toml"
    path.write_text(
        """
[steps.tok]
kind = "tokenizer"
data = "base"
[steps.base]
kind = "pretrain"
data = "tok"
tokenizer = "tok"
budget = { steps = 10 }
"""
    )
    code, err = run_cli(capsys, "validate", str(path))
    assert code == 2
    assert err.count("\n") == 1
    assert "cycle" in err and "tok -> base -> tok" in err


def test_wrong_kind_of_reference(tmp_path, capsys, tiny_recipe):
    text = tiny_recipe.read_text().replace('tokenizer = "tok"', 'tokenizer = "corpus"')
    tiny_recipe.write_text(text)
    code, err = run_cli(capsys, "validate", str(tiny_recipe))
    assert code == 2
    assert "steps.base.tokenizer = 'corpus': that is a data step; name a tokenizer step here" in err


def test_toml_syntax_error(tmp_path, capsys):
    path = tmp_path / "broken.toml"
    path.write_text("[run\nname = 1\n")
    code, err = run_cli(capsys, "validate", str(path))
    assert code == 2
    assert "not valid TOML" in err and "line 1" in err


def test_missing_recipe_file(tmp_path, capsys):
    code, err = run_cli(capsys, "validate", str(tmp_path / "nope.toml"))
    assert code == 2 and "no such recipe file" in err


def test_set_overrides_any_value(tiny_recipe):
    loaded = load_recipe(tiny_recipe, ["steps.base.optim.lr=3e-4", "run.name=other", "steps.base.model.n_layer=3"])
    recipe = loaded.recipe
    assert recipe.steps["base"].optim.lr == 3e-4
    assert recipe.run.name == "other"
    assert recipe.steps["base"].model.n_layer == 3


def test_set_with_unknown_key_names_it(tiny_recipe):
    with pytest.raises(RecipeError) as error:
        load_recipe(tiny_recipe, ["steps.base.optim.lrr=3e-4"])
    assert "steps.base.optim.lrr: unknown key 'lrr'; did you mean 'lr'?" in str(error.value)


def test_set_needs_key_and_value(tiny_recipe):
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(tiny_recipe, ["steps.base.optim.lr"])


def test_override_values_are_parsed_as_toml():
    assert parse_override_value("3e-4") == 3e-4
    assert parse_override_value("true") is True
    assert parse_override_value("[1, 2]") == [1, 2]
    assert parse_override_value("plain words") == "plain words"
    assert parse_override_value('"quoted"') == "quoted"


def test_extends_merges_tables_and_child_wins(tmp_path, tiny_recipe):
    child = tmp_path / "child.toml"
    child.write_text('extends = "recipe.toml"\n[run]\nname = "child"\n[steps.base.optim]\nlr = 1e-4\n')
    recipe = load_recipe(child).recipe
    assert recipe.run.name == "child"
    assert recipe.run.seed == 7  # from the parent
    assert recipe.steps["base"].optim.lr == 1e-4
    assert recipe.steps["base"].optim.warmup == 5  # sibling keys of the parent table survive


def test_extends_loop_is_an_error(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(RecipeError, match="loop"):
        load_recipe(tmp_path / "a.toml")
