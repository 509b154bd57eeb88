"""`llmrecipe compare` on real runs of the tiny recipe: seeds do not differ significantly, 10x training does."""

from __future__ import annotations

import json

import pytest

from llmrecipe import api
from llmrecipe.cli import main
from tests.conftest import write_tiny_recipe

EVAL = """
[steps.eval]
kind = "evaluate"
model = "base"
suites = ["perplexity"]
splits = ["val"]
"""


def run_record(recipe, *overrides: str) -> str:
    return str(api.run(api.load(recipe, overrides)).record_dir)


@pytest.mark.slow
def test_compare_seed_against_seed_and_short_against_ten_times_longer(tmp_path, capsys):
    recipe = write_tiny_recipe(tmp_path, steps=300, extra=EVAL)
    seed_7 = run_record(recipe)
    seed_8 = run_record(recipe, "run.seed=8")
    short = run_record(recipe, "steps.base.budget.steps=30")
    workdir = str(tmp_path / "work")

    def verdicts(a: str, b: str) -> dict[str, str]:
        assert main(["compare", a, b, "--workdir", workdir, "--json"]) == 0
        return {row["metric"]: row["verdict"] for row in json.loads(capsys.readouterr().out)["rows"]}

    assert verdicts(seed_7, seed_8) == {"loss": "no significant difference", "ppl": "no significant difference",
                                        "bpb": "no significant difference"}
    assert set(verdicts(short, seed_7).values()) == {"B better"}
    assert set(verdicts(seed_7, short).values()) == {"A better"}
