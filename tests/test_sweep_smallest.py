"""--smallest: the scaling-law fit, the search over a ladder, and the same answer as training every size."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest

from llmrecipe.cli import main
from llmrecipe.errors import RecipeError
from llmrecipe.sweep.scaling import Law, bootstrap, fit
from llmrecipe.sweep.smallest import SmallestSearch, parse_target
from tests.sweep_helpers import write_sweep_recipe


def test_the_fit_recovers_a_law_and_its_interval_holds_the_truth():
    truth = Law(E=2.0, A=50.0, alpha=0.4)
    n = np.array([1e4, 3e4, 1e5, 3e5, 1e6])
    d = np.full(5, 1e6)
    law = fit(n, d, truth(n, d))
    assert law is not None and np.allclose(law(n, d), truth(n, d), atol=1e-3)
    noisy = truth(n, d) + np.array([0.01, -0.01, 0.005, 0.0, -0.005])
    low, high = bootstrap(n, d, noisy, n, d)
    assert np.all(low <= truth(n, d) + 0.02) and np.all(truth(n, d) - 0.02 <= high)
    assert fit(n[:2], d[:2], noisy[:2]) is None  # two points cannot fix three parameters


def ladder(losses: list[float]) -> SmallestSearch:
    planned = [SimpleNamespace(index=i, trial=SimpleNamespace(index=i), facts={
        "params": 1000 * 2**i, "train_flops": 6000 * 2**i, "train_tokens": 5000}) for i in range(len(losses))]
    return SmallestSearch.over(planned, parse_target("steps.base.val_loss <= 3.0"), "params")


def drive(search: SmallestSearch, losses: list[float]) -> list[int]:
    tried = []
    for batch in search.batches():
        tried += [t.index for t in batch]
        search.tell(batch, {t.index: {"state": "done", "metrics": {"steps.base.val_loss": losses[t.index]}} for t in batch})
    return tried


@pytest.mark.parametrize("losses, answer", [
    ([5.0, 4.0, 3.4, 3.1, 2.9, 2.8, 2.7, 2.65], 4),
    ([2.9, 2.8, 2.7, 2.6, 2.5], 0),  # the smallest already meets it
    ([5.0, 4.5, 4.2, 4.0, 3.9], None),  # the largest misses: none does
])
def test_the_search_finds_the_smallest_size_that_meets_the_target_in_fewer_trials(losses, answer):
    search = ladder(losses)
    tried = drive(search, losses)
    found = search.answer()
    assert (found.trial.index if found else None) == answer
    assert len(tried) < len(losses) and len(set(tried)) == len(tried)
    if answer:
        assert answer - 1 in tried  # confirmed: the size below it was trained and misses


def test_a_target_that_is_not_one_is_a_recipe_error():
    assert parse_target(" steps.eval.val_loss>=0.5 ").goal == "max"
    with pytest.raises(RecipeError, match="expected METRIC OP NUMBER"):
        parse_target("val_loss <= 3")


@pytest.mark.e2e
def test_smallest_finds_what_training_every_size_finds_in_fewer_trials(tmp_path, capsys):
    space = ('[sweep]\nmetric = "steps.base.best_val_loss"\nparallel = 2\n[sweep.space]\n"steps.base.model.d_model" = '
             '{ values = [8, 16, 24, 32, 48], with = { "steps.base.model.n_layer" = [1, 1, 1, 2, 2] } }\n')
    recipe = write_sweep_recipe(tmp_path, steps=40, sweep=space)
    assert main(["sweep", str(recipe), "--workdir", str(tmp_path / "every")]) == 0
    (folder,) = (tmp_path / "every" / "runs").glob("sweep-*")
    every = pl.read_parquet(folder / "trials.parquet").sort("params")
    losses = every["objective"].to_list()
    assert losses == sorted(losses, reverse=True), "the ladder's loss falls with size"
    threshold = (losses[2] + losses[3]) / 2  # sizes 3 and up meet it
    expected = every["trial"][3]

    capsys.readouterr()
    target = f"steps.base.best_val_loss <= {threshold:.4f}"
    assert main(["sweep", str(recipe), "--workdir", str(tmp_path / "search"), "--smallest", target]) == 0
    assert f"smallest: trial {expected}," in capsys.readouterr().err
    (folder,) = (tmp_path / "search" / "runs").glob("sweep-*")
    summary = json.loads((folder / "smallest.json").read_text())
    assert summary["answer"] == expected and summary["trials_run"] < 5
    measured = {row["trial"]: row["measured"] for row in summary["ladder"] if row["measured"] is not None}
    assert all(measured[t] == pytest.approx(v) for t, v in zip(every["trial"], losses) if t in measured)
    report = (folder / "report.md").read_text()
    assert "## Smallest model" in report and (folder / "scaling_fit.png").stat().st_size > 5000
