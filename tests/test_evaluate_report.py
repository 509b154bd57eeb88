"""A recipe with evaluation suites through the CLI: report.md / report.json with plots, status, compare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmrecipe import api
from llmrecipe.cli import main
from tests.conftest import write_tiny_recipe

SUITES = """
[steps.eval]
kind = "evaluate"
model = "base"
worst = 2
bootstrap = 200

[steps.eval.suites.val]
type = "perplexity"
split = "val"

[steps.eval.suites.mc]
type = "multiple_choice"
data = "mc.jsonl"
"""


@pytest.mark.e2e
def test_report_shows_plots_intervals_and_worst_examples_and_compare_reads_runs(tmp_path, capsys):
    rows = [{"context": f"The king speaks of {w}", "choices": ["the castle.", "the sea.", "a crown."], "answer": i % 3}
            for i, w in enumerate(["the sea", "the night", "a crown", "the storm"] * 4)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = write_tiny_recipe(tmp_path, steps=20, extra=SUITES)
    assert main(["run", str(recipe)]) == 0
    capsys.readouterr()

    assert main(["status", str(recipe), "--json"]) == 0
    report = Path(json.loads(capsys.readouterr().out)["report"])
    markdown = report.read_text()
    assert "| loss |" in markdown and "95% CI" in markdown and "Worst examples:" in markdown
    assert "data accounting" in markdown
    images = [line[line.index("(") + 1 : -1] for line in markdown.splitlines() if line.startswith("![")]
    assert any(name.endswith("loss.png") for name in images) and any(name.endswith("mc.png") for name in images)
    for image in images:
        assert (report.parent / image).read_bytes()[:4] == b"\x89PNG"
    numbers = json.loads(report.with_suffix(".json").read_text())
    evaluation = next(step for step in numbers["steps"] if step["step"] == "eval")
    low, high = evaluation["suites"]["mc"]["intervals"]["accuracy"]
    assert low <= evaluation["suites"]["mc"]["metrics"]["accuracy"] <= high

    plan = api.compile(api.load(recipe))
    run_id = report.parent.name
    assert main(["compare", run_id, str(api.artifact(plan, "eval")), "--workdir", plan.workdir, "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)["rows"]
    assert {row["verdict"] for row in compared if row["suite"] == "mc"} == {"no significant difference"}
    assert main(["compare", run_id, str(tmp_path / "nowhere"), "--workdir", plan.workdir]) == 2
