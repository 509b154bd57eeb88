"""Preference pairs from the serve log: the two rules, the counts by reason, and the error for a log with none."""

from __future__ import annotations

import json

import pytest

from llmrecipe.errors import StepError
from llmrecipe.finetune.feedback_pairs import (
    BAD_COMPLETION, BAD_FEEDBACK, DUPLICATE, EMPTY_CORRECTION, EMPTY_FEEDBACK, NO_FEEDBACK, ORPHAN_FEEDBACK,
    PLAIN_PROMPT, SAME_CORRECTION, SAME_TEXT, UNKNOWN_KIND, UNPAIRED_RATING, UNREADABLE, feedback_pairs,
    read_feedback_pairs,
    require_pairs,
)
from llmrecipe.serve.feedback import ServeLog


def chat(log: ServeLog, identity: str, question: str, answer: str) -> None:
    messages = [{"role": "user", "content": question}]
    log.completion(identity, "m", f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n", answer, "stop",
                   messages)


def test_a_correction_gives_correction_chosen_and_the_answer_rejected_with_the_conversation_as_prompt(tmp_path):
    log = ServeLog(tmp_path / "log.jsonl")
    chat(log, "c1", "What is AI?", "A fish.")
    log.feedback("c1", rating=-1, correction="The science of thinking machines.", comment=None)

    pairs = read_feedback_pairs(tmp_path / "log.jsonl")

    assert pairs.rows == [{"prompt": [{"role": "user", "content": "What is AI?"}],
                           "chosen": "The science of thinking machines.", "rejected": "A fish.",
                           "rule": "correction", "completion_ids": ["c1"], "line": 1}]
    assert pairs.built == {"correction": 1}
    assert pairs.lines == 2 and not pairs.skipped


def test_two_completions_of_one_prompt_rated_differently_give_the_higher_rated_as_chosen(tmp_path):
    log = ServeLog(tmp_path / "log.jsonl")
    log.completion("a", "m", "Once upon", " a time", "stop")
    log.completion("b", "m", "Once upon", " the moon", "stop")
    log.completion("c", "m", "Once upon", " a hill", "stop")
    log.feedback("a", rating=1, correction=None, comment=None)
    log.feedback("b", rating=-1, correction=None, comment=None)
    log.feedback("c", rating=0, correction=None, comment=None)

    pairs = read_feedback_pairs(tmp_path / "log.jsonl")

    found = {(row["chosen"], row["rejected"]) for row in pairs.rows}
    assert found == {(" a time", " the moon"), (" a time", " a hill"), (" a hill", " the moon")}
    assert all(row["prompt"] == "Once upon" and row["rule"] == "rating" for row in pairs.rows)
    assert pairs.built == {"rating": 3}


def test_the_latest_rating_counts_and_completions_of_other_prompts_are_not_paired():
    lines = [
        {"kind": "completion", "id": "a", "prompt": "p", "completion": "x"},
        {"kind": "completion", "id": "b", "prompt": "p", "completion": "y"},
        {"kind": "completion", "id": "c", "prompt": "q", "completion": "z"},
        {"kind": "feedback", "completion_id": "a", "rating": -1},
        {"kind": "feedback", "completion_id": "b", "rating": 0},
        {"kind": "feedback", "completion_id": "a", "rating": 1},  # changed their mind: a is now the better one
        {"kind": "feedback", "completion_id": "c", "rating": -1},
    ]
    pairs = feedback_pairs(lines)
    assert [(r["chosen"], r["rejected"]) for r in pairs.rows] == [("x", "y")]
    assert pairs.skipped == {UNPAIRED_RATING: 1}


def test_a_chat_and_a_plain_completion_with_the_same_rendered_prompt_are_different_prompts():
    lines = [
        {"kind": "completion", "id": "a", "prompt": "hi", "completion": "x",
         "messages": [{"role": "user", "content": "hi"}]},
        {"kind": "completion", "id": "b", "prompt": "hi", "completion": "y"},
        {"kind": "feedback", "completion_id": "a", "rating": 1},
        {"kind": "feedback", "completion_id": "b", "rating": -1},
    ]
    assert feedback_pairs(lines).rows == []


def test_every_line_left_out_is_counted_under_its_reason():
    lines = [
        '{"kind": "completion", "id": "ok", "prompt": "p", "completion": "bad"}',
        "",
        '{"kind": "completion", "id": "cut", "prompt": "p", "compl',  # a crash cut the last write short
        "[1, 2]",
        '{"kind": "metrics"}',
        '{"kind": "completion", "id": "no-text", "prompt": "p"}',
        '{"kind": "completion", "id": "tool", "prompt": "p", "completion": "c", '
        '"messages": [{"role": "tool", "content": "x"}]}',
        '{"kind": "completion", "id": "silent", "prompt": "p", "completion": "s"}',
        '{"kind": "completion", "id": "same", "prompt": "q", "completion": "right"}',
        '{"kind": "completion", "id": "blank", "prompt": "q", "completion": "w"}',
        '{"kind": "completion", "id": "twin1", "prompt": "t", "completion": "same words"}',
        '{"kind": "completion", "id": "twin2", "prompt": "t", "completion": "same words"}',
        '{"kind": "feedback", "completion_id": "ok", "rating": -1, "correction": "good"}',
        '{"kind": "feedback", "completion_id": "forgotten", "rating": 1}',
        '{"kind": "feedback", "completion_id": "ok", "rating": 5}',
        '{"kind": "feedback", "completion_id": "ok", "comment": "meh"}',
        '{"kind": "feedback", "completion_id": "same", "correction": "right"}',
        '{"kind": "feedback", "completion_id": "blank", "correction": "  "}',
        '{"kind": "feedback", "completion_id": "twin1", "rating": 1}',
        '{"kind": "feedback", "completion_id": "twin2", "rating": -1}',
    ]
    pairs = feedback_pairs(lines)
    assert [(r["chosen"], r["rejected"]) for r in pairs.rows] == [("good", "bad")]
    assert pairs.lines == 19
    assert pairs.skipped == {UNREADABLE: 2, UNKNOWN_KIND: 1, BAD_COMPLETION: 2, ORPHAN_FEEDBACK: 1, BAD_FEEDBACK: 1,
                             EMPTY_FEEDBACK: 1, SAME_CORRECTION: 1, EMPTY_CORRECTION: 1, SAME_TEXT: 1, NO_FEEDBACK: 1}
    assert "1 pairs from 19 serve-log lines (1 by correction)" in pairs.summary()


def test_feedback_written_before_its_completion_line_still_counts():
    lines = [{"kind": "feedback", "completion_id": "a", "correction": "better"},
             {"kind": "completion", "id": "a", "prompt": "p", "completion": "worse"}]
    assert [(r["chosen"], r["rejected"]) for r in feedback_pairs(lines).rows] == [("better", "worse")]


def test_the_same_pair_from_two_lines_is_kept_once():
    lines = [
        {"kind": "completion", "id": "a", "prompt": "p", "completion": "worse"},
        {"kind": "completion", "id": "b", "prompt": "p", "completion": "worse"},
        {"kind": "feedback", "completion_id": "a", "correction": "better"},
        {"kind": "feedback", "completion_id": "b", "correction": "better"},
    ]
    pairs = feedback_pairs(lines)
    assert len(pairs.rows) == 1 and pairs.skipped == {DUPLICATE: 1}


def test_a_log_without_usable_pairs_stops_with_the_reasons_and_the_fix(tmp_path):
    path = tmp_path / "serve-log.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in [
        {"kind": "completion", "id": "a", "prompt": "p", "completion": "x"},
        {"kind": "completion", "id": "b", "prompt": "p", "completion": "y"},
        {"kind": "feedback", "completion_id": "a", "rating": 1},
    ]) + "\n")
    with pytest.raises(StepError) as error:
        require_pairs(read_feedback_pairs(path), path.name)
    message = str(error.value)
    assert message.startswith("serve-log.jsonl: no usable preference pairs in this serve log (3 lines; ")
    assert "1 completion without feedback" in message and "1 rated but no differently rated answer" in message
    assert "--log FILE" in message and "POST /v1/feedback" in message and "dataset.path" in message


def test_an_empty_log_and_a_missing_log_say_so(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(StepError, match=r"\(0 lines; it is empty\)"):
        require_pairs(read_feedback_pairs(tmp_path / "empty.jsonl"), "empty.jsonl")
    with pytest.raises(StepError, match="does not exist"):
        read_feedback_pairs(tmp_path / "missing.jsonl")


def test_for_a_chat_task_pairs_of_plain_completions_are_counted_out():
    lines = [
        {"kind": "completion", "id": "a", "prompt": "raw text", "completion": "x"},
        {"kind": "completion", "id": "b", "prompt": "<user>hi", "completion": "y",
         "messages": [{"role": "user", "content": "hi"}]},
        {"kind": "feedback", "completion_id": "a", "correction": "better"},
        {"kind": "feedback", "completion_id": "b", "correction": "hello"},
    ]
    chat = feedback_pairs(lines).conversations_only()
    assert [row["chosen"] for row in chat.rows] == ["hello"]
    assert chat.built == {"correction": 1} and chat.skipped == {PLAIN_PROMPT: 1}
