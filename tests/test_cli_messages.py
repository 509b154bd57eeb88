"""Command-line messages that name the right thing: `--set` list indices and misspelt steps, "did you mean" that
never points at the step the error is in, closed pipes, and `compare` finding runs in the recipe's workdir."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmrecipe import api
from llmrecipe.cli import main
from llmrecipe.errors import RecipeError
from tests.conftest import REPO, write_tiny_recipe


def test_set_indexes_lists_with_a_number(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "a.txt").write_text("The king speaks of the sea.\n")
    loaded = api.load(recipe, ["steps.corpus.sources.0.path=\"more\"", "steps.corpus.ops.1.op=\"dedup_exact\""])
    assert loaded.recipe.steps["corpus"].sources[0].path == "more"
    with pytest.raises(RecipeError, match=r"steps.corpus.sources is a list of 1: give an index from 0 to 0 after it"):
        api.load(recipe, ["steps.corpus.sources.2.path=\"more\""])
    with pytest.raises(RecipeError, match=r"steps.corpus.sources is a list of 1"):
        api.load(recipe, ["steps.corpus.sources.path=\"more\""])


def test_a_misspelt_step_in_set_offers_the_step_it_meant(tmp_path):
    recipe = write_tiny_recipe(tmp_path)
    with pytest.raises(RecipeError, match=r"the recipe has no step 'bse'; did you mean 'base'\?"):
        api.load(recipe, ["steps.bse.optim.lr=1e-3"])
    added = api.load(recipe, ["steps.more.kind=\"tokenizer\"", "steps.more.data=\"corpus\"",
                              "steps.more.vocab_size=300"])  # a new step, declared by its kind first
    assert added.recipe.steps["more"].kind == "tokenizer"


def test_did_you_mean_never_suggests_the_step_the_error_is_in(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, edits=(('tokenizer = "tok"', 'tokenizer = "bse"'),))
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "steps.base.tokenizer = 'bse': no step has that name" in err
    assert "'base'" not in err and "tok" in err  # the tokenizer steps are offered, not the pretrain step itself


def test_a_closed_pipe_ends_a_command_quietly_with_the_sigpipe_code():
    for command in (["schema"], ["validate", "recipes/quickstart.toml"]):
        process = subprocess.Popen([sys.executable, "-m", "llmrecipe", *command], cwd=REPO,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        process.stdout.close()  # the reader is gone before the first line (`| head -0`)
        err = process.stderr.read().decode()
        assert process.wait() == 141 and "Traceback" not in err and "BrokenPipe" not in err, err


def evaluated_run(workdir, run_id: str, fingerprint: str) -> None:
    """A run record whose evaluate step's results are in the store (as a finished run leaves them)."""
    (workdir / "runs" / run_id).mkdir(parents=True)
    plan = {"workdir": str(workdir), "steps": [{"name": "eval", "kind": "evaluate", "fingerprint": fingerprint}]}
    (workdir / "runs" / run_id / "plan.json").write_text(json.dumps(plan))
    (workdir / "store" / fingerprint).mkdir(parents=True, exist_ok=True)
    (workdir / "store" / fingerprint / "results.json").write_text(json.dumps({"suites": {}}))


def test_compare_finds_runs_in_the_recipes_workdir_and_says_when_both_sides_are_one_artifact(tmp_path, capsys,
                                                                                              monkeypatch):
    recipe = write_tiny_recipe(tmp_path)
    workdir = tmp_path / "work"  # the tiny recipe's [run] workdir
    evaluated_run(workdir, "run-a", "f" * 64)
    evaluated_run(workdir, "run-b", "f" * 64)  # a second run that reused the cached evaluation
    monkeypatch.chdir(tmp_path / "corpus")  # not where the runs are: the recipe says where
    assert main(["compare", str(recipe), "run-a", "run-b"]) == 0
    out = capsys.readouterr().out
    assert f"A: {workdir / 'store' / ('f' * 64)}" in out and "A and B are the same evaluation artifact" in out
    assert main(["compare", "run-a", "run-b", "--workdir", str(workdir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["same_artifact"] is True
    assert main(["compare", "run-a", "run-b"]) == 2  # ./.llmrecipe has no such runs: a one-line error
    assert "nor a run id under" in capsys.readouterr().err
