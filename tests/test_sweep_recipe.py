"""The [sweep] table: trials it makes, and bad sweeps refused with exit 2 and their TOML path before any trial."""

from __future__ import annotations

import random

import pytest

from llmrecipe.cli import main
from llmrecipe.recipe.recipe import Recipe
from llmrecipe.sweep.space import grid_trials, random_trials, trial_count
from llmrecipe.sweep.toml import toml_document, toml_value
from tests.sweep_helpers import write_sweep_recipe


def sweep_of(table: dict):
    recipe = {"steps": {"corpus": {"kind": "data", "sources": [{"path": "c"}]}}, "sweep": table}
    return Recipe.model_validate(recipe).sweep


def test_a_grid_crosses_lists_and_moves_paired_lists_together():
    sweep = sweep_of({"metric": "steps.base.best_val_loss", "space": {
        "a": [1, 2, 3], "b": {"values": [10, 20], "with": {"c": ["x", "y"]}}}})
    trials = grid_trials(sweep.space)
    assert trial_count(sweep) == len(trials) == 6
    assert [t.values for t in trials[:3]] == [{"a": 1, "b": 10, "c": "x"}, {"a": 1, "b": 20, "c": "y"},
                                              {"a": 2, "b": 10, "c": "x"}]
    assert [t.index for t in trials] == list(range(6))


def test_random_trials_are_the_same_for_the_same_seed_and_stay_in_range():
    sweep = sweep_of({"method": "random", "samples": 8, "metric": "steps.base.best_val_loss", "space": {
        "lr": {"log_uniform": [1e-4, 1e-1]}, "wd": {"uniform": [0.0, 0.2]}, "n": [1, 2, 4]}})
    first, again, other = random_trials(sweep, 3), random_trials(sweep, 3), random_trials(sweep, 4)
    assert [t.values for t in first] == [t.values for t in again]
    assert [t.values for t in first] != [t.values for t in other]
    assert all(1e-4 <= t.values["lr"] <= 1e-1 and 0 <= t.values["wd"] <= 0.2 and t.values["n"] in (1, 2, 4)
               for t in first)


def test_tpe_trials_are_the_same_for_the_same_seed():
    pytest.importorskip("optuna", reason="TPE needs Optuna: pip install 'llmrecipe[sweep]'")
    from llmrecipe.sweep.propose import TpeTrials

    sweep = sweep_of({"method": "tpe", "samples": 12, "parallel": 2, "metric": "steps.base.best_val_loss", "space": {
        "lr": {"log_uniform": [1e-4, 1e-1]}, "n": {"values": [1, 2], "with": {"d": [16, 32]}}}})

    def drive(seed: int) -> list[dict]:
        proposer, seen = TpeTrials(sweep, seed, "m"), []
        for batch in proposer.batches():
            seen += [t.values for t in batch]
            fake = {t.index: {"state": "done", "metrics": {"m": abs(t.values["lr"] - 3e-3) * 100 + t.values["n"]}}
                    for t in batch}
            proposer.tell(batch, fake)
        return seen

    first = drive(5)
    assert len(first) == 12 and first == drive(5) and first != drive(6)
    assert all({"lr", "n", "d"} == set(values) and (values["n"], values["d"]) in ((1, 16), (2, 32)) for values in first)


def test_values_written_as_toml_read_back_equal():
    import tomllib

    data = {"run": {"name": "x", "seed": 3}, "steps": {"a": {"kind": "data", "sources": [{"path": "c d\"e"}],
                                                             "split": {"val": 0.05}, "flag": True, "lr": 3e-4}}}
    assert tomllib.loads(toml_document(data, "a header")) == data
    for value in (1e-3, 3, "x\\y", [1, 2.5], {"a.b": 1}):
        assert tomllib.loads(f"v = {toml_value(value)}")["v"] == value


BAD_SWEEPS = {
    "unknown key path": (
        '"steps.base.optim.lrr" = [1e-3]',
        'sweep.space."steps.base.optim.lrr": trial 0 sets steps.base.optim.lrr = 0.001, which the recipe rejects'),
    "value the recipe rejects": (
        '"steps.base.model.n_layer" = [2, -1]', 'sweep.space."steps.base.model.n_layer": trial 1 sets '
        'steps.base.model.n_layer = -1, which the recipe rejects'),
    "paired value the recipe rejects": (
        '"steps.base.model.n_layer" = { values = [1, 2], with = { "steps.base.model.n_head" = [2, 3] } }',
        'sweep.space."steps.base.model.n_layer": trial 1 sets steps.base.model.n_head = 3'),
    "log_uniform in a grid": (
        '"steps.base.optim.lr" = { log_uniform = [1e-4, 1e-2] }',
        'sweep: space."steps.base.optim.lr" = { log_uniform = [0.0001, 0.01] }: a grid needs listed values'),
    "paired lists of unequal lengths": (
        '"steps.base.model.n_layer" = { values = [1, 2], with = { "steps.base.model.d_model" = [16] } }',
        'space."steps.base.model.n_layer".with."steps.base.model.d_model": 1 values but `values` has 2'),
}


@pytest.mark.parametrize("case", BAD_SWEEPS, ids=list(BAD_SWEEPS))
def test_a_bad_sweep_fails_before_any_trial_with_exit_2_and_its_toml_path(case, tmp_path, capsys):
    space, message = BAD_SWEEPS[case]
    recipe = write_sweep_recipe(tmp_path, sweep=f'[sweep]\nmetric = "steps.base.best_val_loss"\n[sweep.space]\n{space}\n')
    assert main(["sweep", str(recipe)]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "work" / "runs").exists() and not (tmp_path / "work" / "store").exists()


def test_a_metric_no_step_reports_fails_before_any_trial(tmp_path, capsys):
    sweep = '[sweep]\nmetric = "steps.base.val_acc"\n[sweep.space]\n"steps.base.optim.lr" = [1e-3]\n'
    assert main(["sweep", str(write_sweep_recipe(tmp_path, sweep=sweep))]) == 2
    err = capsys.readouterr().err
    assert "sweep.metric = 'steps.base.val_acc': step 'base' (pretrain) does not report 'val_acc'" in err
    assert "steps.base.best_val_loss" in err
    sweep = sweep.replace("steps.base.val_acc", "steps.bsae.val_loss")
    assert main(["sweep", str(write_sweep_recipe(tmp_path, sweep=sweep))]) == 2
    assert "no step 'bsae'; did you mean 'base'?" in capsys.readouterr().err
    assert not (tmp_path / "work" / "runs").exists()


def test_random_and_tpe_need_samples_and_a_grid_refuses_them(tmp_path, capsys):
    for method, samples, message in (("random", "", "samples: a random sweep needs the number of trials"),
                                     ("grid", "samples = 3", "samples: a grid runs every combination")):
        sweep = f'[sweep]\nmethod = "{method}"\n{samples}\nmetric = "steps.base.best_val_loss"\n[sweep.space]\n"x" = [1]\n'
        assert main(["sweep", str(write_sweep_recipe(tmp_path, sweep=sweep))]) == 2
        assert message in capsys.readouterr().err


def test_run_and_validate_ignore_the_sweep_table(tmp_path):
    recipe = write_sweep_recipe(tmp_path)
    assert main(["validate", str(recipe)]) == 0


def test_a_size_ladder_scales_depth_and_width_together(tmp_path):
    from llmrecipe.sweep.prepare import prepare
    from llmrecipe.sweep.space import grid_trials

    sweep = '[sweep]\nmetric = "steps.base.best_val_loss"\n[sweep.space]\n"steps.base.model" = { size = [1, 2, 3] }\n'
    setup = prepare(write_sweep_recipe(tmp_path, sweep=sweep), [])
    trials = grid_trials(setup.sweep.space)
    assert [t.values for t in trials] == [  # the tiny recipe's model: 2 layers, 2 heads, 32 wide
        {f"steps.base.model.{k}": v * s for k, v in (("n_layer", 2), ("n_head", 2), ("d_model", 32))} for s in (1, 2, 3)]


def test_a_size_ladder_must_name_a_pretrain_steps_model(tmp_path, capsys):
    sweep = '[sweep]\nmetric = "steps.base.best_val_loss"\n[sweep.space]\n"steps.base.optim" = { size = [1, 2] }\n'
    assert main(["sweep", str(write_sweep_recipe(tmp_path, sweep=sweep))]) == 2
    assert 'sweep.space."steps.base.optim" = { size = [1, 2] }: a size ladder scales a pretrain step\'s model' in \
        capsys.readouterr().err


def test_a_result_is_reused_only_while_its_trial_plans_the_same_steps(tmp_path):
    """A trial's earlier result whose fingerprints differ (its data files changed, say) runs again."""
    import json

    from llmrecipe.sweep.driver import _run_batch, check_trials
    from llmrecipe.sweep.prepare import prepare
    from llmrecipe.sweep.record import result_path

    setup = prepare(write_sweep_recipe(tmp_path), [])
    planned = check_trials(setup)
    result_path(setup, 0).parent.mkdir(parents=True)
    for index, fingerprints in ((0, planned[0].facts["fingerprints"]), (1, {"base": "another"})):
        result_path(setup, index).write_text(json.dumps({"trial": index, "state": "done", "metrics": {},
                                                         "fingerprints": fingerprints}))

    class Engine:
        def run(self, jobs, watch=None):
            for job in jobs:
                yield job, {"trial": job["trial"], "state": "done", "metrics": {}, "seconds": 0.0}

    counts = {"ran": 0, "reused": 0, "interrupted": 0}
    results = _run_batch(setup, planned, Engine(), counts, lambda line: None)
    assert sorted(results) == [0, 1, 2, 3] and counts == {"ran": 3, "reused": 1, "interrupted": 0}


def test_the_local_engine_gives_each_cuda_trial_gpus_of_its_own(monkeypatch):
    """Three trials wanting one GPU each on a machine with two: never two trials on one GPU at once."""
    import threading
    import time

    from llmrecipe.sweep import engines

    busy, seen, lock = set(), [], threading.Lock()

    def fake_trial(job, watch=None):
        with lock:
            assert job["visible_gpus"] not in busy
            busy.add(job["visible_gpus"])
            seen.append(job["visible_gpus"])
        time.sleep(0.05)
        with lock:
            busy.discard(job["visible_gpus"])
        return {"trial": job["trial"], "state": "done", "metrics": {}}

    monkeypatch.setattr(engines, "run_trial_process", fake_trial)
    engine = engines.LocalEngine(parallel=3, gpus=2)
    done = list(engine.run([{"trial": i, "gpus": 1} for i in range(3)]))
    assert len(done) == 3 and set(seen) == {"0", "1"}
    cpu = list(engines.LocalEngine(parallel=1, gpus=2).run([{"trial": 0, "gpus": 0}]))
    assert cpu[0][1]["state"] == "done" and seen[-1] is None
