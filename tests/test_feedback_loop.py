"""The feedback loop's pieces on a tiny model: a "user" rates and corrects served answers, a preference step trains on
the serve log, and a log that gives no pair stops `validate` with the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.feedback_loop import Question, held_out_files, rating, serve_and_drive
from benchmarks.harness.suite import SETTINGS
from llmrecipe import api
from llmrecipe.cli import main
from llmrecipe.errors import RecipeError
from llmrecipe.finetune.feedback_pairs import read_feedback_pairs
from llmrecipe.finetune.preference_data import serve_log_rows
from llmrecipe.recipe.finetune import DatasetConfig
from llmrecipe.serve.feedback import ServeLog
from tests.conftest import REPO, SHARED_DATA, write_tiny_recipe
from tests.generate_helpers import lively_model, save_artifact, tiny_shape
from tests.serve_helpers import CHAT_TEMPLATE
from tests.test_preference import preference_spec, run_step

QUESTIONS = [Question("say red blue", ["red blue ok"]), Question("name a river", ["river stone ok", "the river"]),
             Question("count seed", ["seed seed ok"])]


@pytest.fixture(scope="module")
def driven(tmp_path_factory) -> tuple[dict, Path]:
    """The benchmark's user against a tiny random chat model served on loopback: what it sent, and the log."""
    folder = save_artifact(lively_model(tiny_shape(vocab_size=320, seq_len=64)), tmp_path_factory.mktemp("m") / "tiny",
                           CHAT_TEMPLATE)
    log = tmp_path_factory.mktemp("log") / "serve-log.jsonl"
    return serve_and_drive(folder, log, QUESTIONS, max_tokens=8, seed=0), log


def test_the_user_rates_both_answers_and_corrects_the_greedy_one_through_the_api(driven):
    counts, log = driven
    assert counts["answers"] == 6 and sum(counts["ratings"].values()) == 6 and counts["corrections"] == 3
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    completions = [line for line in lines if line["kind"] == "completion"]
    feedback = [line for line in lines if line["kind"] == "feedback"]
    assert len(completions) == 6 and len(feedback) == 6
    assert completions[0]["messages"] == [{"role": "user", "content": "say red blue"}]
    assert [f["correction"] for f in feedback if f["correction"]] == ["red blue ok", "river stone ok", "seed seed ok"]

    pairs = read_feedback_pairs(log)
    corrections = [row for row in pairs.rows if row["rule"] == "correction"]
    assert [(row["prompt"][0]["content"], row["chosen"]) for row in corrections] == \
        [(q.text, q.references[0]) for q in QUESTIONS]


def test_ratings_follow_the_best_token_overlap_with_any_reference():
    assert rating("the river", ["river stone ok", "the river"]) == 1
    assert rating("river lamp glass", ["river stone ok"]) == 0  # one word of three in common: F1 1/3, neutral
    assert rating("lamp", ["river stone ok"]) == -1


def test_the_held_out_files_are_the_pairs_the_step_holds_out(tmp_path):
    pairs = [{"prompt": [{"role": "user", "content": q}], "chosen": "good " + q, "rejected": "bad", "rule": rule}
             for q, rule in [("a", "correction"), ("a", "rating"), ("b", "correction")]]
    counts = held_out_files(pairs, lambda pair: pair["prompt"][0]["content"] == "a", tmp_path)
    assert counts == {"held_out_pairs": 2, "held_out_questions": 1}
    answers = [json.loads(line) for line in (tmp_path / "held-out-answers.jsonl").read_text().splitlines()]
    assert answers == [{"prompt": "a", "response": "good a"}]
    choices = [json.loads(line) for line in (tmp_path / "held-out-pairs.jsonl").read_text().splitlines()]
    assert choices[0] == {"context": "<|im_start|>user\na<|im_end|>\n<|im_start|>assistant\n",
                          "choices": ["good a<|im_end|>", "bad<|im_end|>"], "answer": 0}


def marker_log(path: Path, questions: int) -> Path:
    """A serve log where every answer is corrected to end with the marker word, and a few are only rated."""
    log = ServeLog(path)
    for i in range(questions):
        messages = [{"role": "user", "content": f"say words about seed {i}"}]
        log.completion(f"c{i}", "m", "unused", "red blue green", "stop", messages)
        log.feedback(f"c{i}", rating=-1, correction=f"river stone {i % 3} ok", comment=None)
    log.completion("plain", "m", "raw prompt", "lamp", "stop")  # a plain completion: no conversation to train on
    log.feedback("plain", rating=None, correction="glass", comment=None)
    log.completion("silent", "m", "unused", "lamp", "stop", [{"role": "user", "content": "hi"}])
    return path


def test_an_answer_both_corrected_and_rated_against_another_gives_two_distinct_rows(tmp_path):
    log = ServeLog(tmp_path / "serve-log.jsonl")
    for identity, answer, rating in [("a", "worse", -1), ("b", "better", 1)]:
        log.completion(identity, "m", "unused", answer, "stop", [{"role": "user", "content": "q"}])
        log.feedback(identity, rating=rating, correction="best" if identity == "a" else None, comment=None)
    source = serve_log_rows(tmp_path / "serve-log.jsonl", DatasetConfig(path="serve-log.jsonl", format="serve_log"))
    assert [n for n, _ in source.rows] == [1, 2]  # numbers tell rows apart, though both pairs start on line 1
    assert [(row["chosen"], row["rejected"]) for _, row in source.rows] == [("best", "worse"), ("better", "worse")]
    assert source.built == {"correction": 1, "rating": 1}


def test_a_preference_step_trains_on_a_serve_log_and_reports_its_pairs(tmp_path):
    log = marker_log(tmp_path / "serve-log.jsonl", 24)
    spec = preference_spec(log, dataset=DatasetConfig(path=log.name, format="serve_log", val_fraction=0.25),
                           total_steps=6, eval_every=3, checkpoint_every=3)
    summary, _ = run_step(tmp_path, "tuned", spec)
    assert summary["train_pairs"] + summary["val_pairs"] == 24 and summary["val_pairs"] > 0
    assert summary["rows_skipped_pair_of_plain_completions_not_chat"] == 1
    assert summary["rows_skipped_completion_without_feedback"] == 1
    assert summary["pairs_by_correction"] == 24
    assert "val_reward_accuracy" in summary


PREFERENCE_STEP = """
[steps.tuned]
kind = "finetune"
init = "base"
task = "preference"
dataset = { path = "serve-log.jsonl", format = "serve_log" }
budget = { steps = 20 }
"""


def test_a_serve_log_without_usable_pairs_stops_validate_with_the_fix(tmp_path, capsys):
    path = write_tiny_recipe(tmp_path, steps=20, extra=PREFERENCE_STEP)
    log = ServeLog(tmp_path / "serve-log.jsonl")
    log.completion("a", "m", "unused", "an answer", "stop", [{"role": "user", "content": "hi"}])
    log.completion("b", "m", "unused", "another", "stop", [{"role": "user", "content": "hi"}])
    log.feedback("a", rating=1, correction=None, comment=None)  # rated, but nothing rated differently

    with pytest.raises(RecipeError) as error:
        api.compile(api.load(path), workdir=tmp_path / "work")
    message = str(error.value)
    assert message.startswith("steps.tuned.dataset.path: serve-log.jsonl: no usable preference pairs in this serve log")
    assert "1 completion without feedback" in message and "1 rated but no differently rated answer" in message
    assert "--log FILE" in message and "POST /v1/feedback" in message

    assert main(["validate", str(path)]) == 2
    assert "no usable preference pairs" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()  # nothing ran


@pytest.mark.slow
@pytest.mark.e2e
def test_the_loop_benchmark_runs_end_to_end_with_tiny_budgets(tmp_path):
    """Pre-train, SFT, serve, rate and correct, preference-tune, evaluate both, compare: the benchmark's quick run."""
    if not (SHARED_DATA / "sft" / "chatterbot.jsonl").is_file():
        pytest.skip("../shared/data is not there")
    command = [sys.executable, str(REPO / "benchmarks" / "feedback_loop.py"), "--workdir", str(tmp_path),
               *SETTINGS["feedback_loop"].quick]
    run = subprocess.run(command, capture_output=True, text=True, timeout=1800, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    figures = json.loads(run.stdout.strip().splitlines()[-1])
    assert figures["answers"] == 2 * figures["questions"] and figures["corrections"] > 0
    assert figures["pairs_by_rule"]["correction"] == figures["corrections"]
    assert figures["train_pairs"] + figures["val_pairs"] == figures["pairs"] and figures["val_pairs"] > 0
    assert figures["held_out_pairs"] == figures["val_pairs"]  # the evaluation files hold the step's own held-out pairs
    assert figures["held_out_start"]["reward_accuracy"] == 0.5
    assert {"answers.f1", "pairs.accuracy"} <= set(figures["compare"])
    assert "$ llmrecipe compare" in run.stdout
