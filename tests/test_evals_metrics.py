"""Every metric against an independent computation: sacrebleu's corpus scores, hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import sacrebleu

from llmrecipe.classification import (
    class_scores,
    confident_mistakes,
    confusion_matrix,
    expected_calibration_error,
    plot_confusion_matrix,
)
from llmrecipe.evals.generation import METRICS as GENERATION_METRICS
from llmrecipe.evals.generation import text_columns
from llmrecipe.evals.qa import leading_answer
from llmrecipe.evals.stats import Metric, confidence_interval, paired_comparison, value
from llmrecipe.evals.text_metrics import exact_match, normalize_answer, rouge_l, token_f1

PREDICTIONS = ["the cat sat on the mat", "Hello there, general Kenobi!", "", "a b c d e f", "Paris is the capital"]
REFERENCES = ["the cat is on the mat", "hello there general kenobi", "something", "a b c d e f", "The capital is Paris."]


# ---- generation metrics ----------------------------------------------------------------------------------------


def test_bleu_and_chrf_equal_sacrebleu_corpus_scores():
    columns = text_columns(PREDICTIONS, REFERENCES)
    assert value(GENERATION_METRICS["bleu"], columns) == pytest.approx(sacrebleu.corpus_bleu(PREDICTIONS, [REFERENCES]).score)
    assert value(GENERATION_METRICS["chrf"], columns) == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, [REFERENCES]).score)
    subset = [0, 3, 3, 4]  # a bootstrap-like resample: sums of per-sentence statistics still give sacrebleu's score
    resampled = {name: column[subset] for name, column in columns.items()}
    expected = sacrebleu.corpus_bleu([PREDICTIONS[i] for i in subset], [[REFERENCES[i] for i in subset]]).score
    assert value(GENERATION_METRICS["bleu"], resampled) == pytest.approx(expected)


def test_exact_match_and_token_f1_by_hand():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert exact_match("Hello there, general Kenobi!", "hello there general kenobi") == 1.0
    assert exact_match("the cat", "a dog") == 0.0
    # prediction {cat, sat, on, mat} vs reference {cat, is, on, mat}: 3 common, P = R = 3/4
    assert token_f1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(0.75)
    # prediction 2 tokens, reference 4, 1 common: P 1/2, R 1/4, F1 = 2 * 1/8 / (3/4) = 1/3
    assert token_f1("paris france", "it is in paris") == pytest.approx(1 / 3)
    assert token_f1("", "") == 1.0 and token_f1("", "x") == 0.0


def test_rouge_l_by_hand():
    # tokens: [the cat sat on the mat] vs [the cat is on the mat]; LCS = the cat on the mat = 5; P = R = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # [paris is the capital] vs [the capital is paris]: LCS 2 (e.g. "the capital"); P = R = 1/2
    assert rouge_l("Paris is the capital", "The capital is Paris.") == pytest.approx(0.5)
    assert rouge_l("", "x") == 0.0


def test_leading_answers():
    assert leading_answer("Yes. Frost is common.", ["yes", "no"]) == "yes"
    assert leading_answer("  no, never", ["yes", "no"]) == "no"
    assert leading_answer("Nobody knows", ["yes", "no"]) is None  # whole words only
    assert leading_answer("I am not sure", ["yes", "no"]) is None


# ---- classification --------------------------------------------------------------------------------------------


def test_precision_recall_f1_and_confusion_matrix_by_hand():
    labels = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 2, 2])
    matrix = confusion_matrix(labels, predictions, classes=3)
    assert matrix.tolist() == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    scores = class_scores(matrix)
    assert scores.accuracy == pytest.approx(4 / 6)
    # class 0: P 2/2, R 2/3; class 1: P 1/2, R 1/2; class 2: P 1/2, R 1/1
    assert scores.precision == pytest.approx([1.0, 0.5, 0.5])
    assert scores.recall == pytest.approx([2 / 3, 0.5, 1.0])
    assert scores.f1 == pytest.approx([0.8, 0.5, 2 / 3])
    assert scores.support == [3, 2, 1]
    assert scores.macro_precision == pytest.approx(2 / 3)
    assert scores.macro_recall == pytest.approx((2 / 3 + 0.5 + 1.0) / 3)
    assert scores.macro_f1 == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert scores.micro_precision == scores.micro_recall == scores.micro_f1 == pytest.approx(4 / 6)


def test_a_class_never_predicted_scores_zero_not_nan():
    scores = class_scores(confusion_matrix(np.array([0, 1, 1]), np.array([0, 0, 0]), classes=2))
    assert scores.precision == [pytest.approx(1 / 3), 0.0] and scores.recall == [1.0, 0.0] and scores.f1[1] == 0.0


def test_expected_calibration_error_by_hand():
    # Two bins of 5 used: (0.6, 0.6667] holds 0.65 x2 (1 right): |0.5 - 0.65| = 0.15;
    # (0.9333, 1] holds 0.95 x2 (both right): |1 - 0.95| = 0.05. ECE = (2 * 0.15 + 2 * 0.05) / 4 = 0.1
    confidences = np.array([0.65, 0.65, 0.95, 0.95])
    correct = np.array([1, 0, 1, 1])
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.1)
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([1, 1])) == 0.0
    assert expected_calibration_error(np.array([0.0]), np.array([0])) == 0.0


def test_confident_mistakes_are_the_surest_wrong_predictions(tmp_path):
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    labels = np.array([0, 0, 1, 0])
    assert confident_mistakes(probabilities, labels, k=2) == [3, 1]
    path = plot_confusion_matrix(np.array([[3, 1], [0, 2]]), ["negative", "positive"], tmp_path / "cm.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---- intervals and verdicts ------------------------------------------------------------------------------------

ACCURACY = Metric(lambda sums: sums["correct"] / sums["count"], higher_is_better=True)


def test_bootstrap_interval_covers_the_value_and_matches_the_binomial_spread():
    rng = np.random.default_rng(0)
    correct = (rng.random(2000) < 0.3).astype(float)
    columns = {"correct": correct, "count": np.ones(2000)}
    low, high = confidence_interval(ACCURACY, columns, resamples=2000, seed=1)
    p = correct.mean()
    half = 1.96 * math.sqrt(p * (1 - p) / 2000)  # normal approximation to the binomial
    assert low < p < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)


def test_paired_verdicts():
    rng = np.random.default_rng(0)
    base = (rng.random(1000) < 0.5).astype(float)
    better = np.maximum(base, (rng.random(1000) < 0.2).astype(float))  # right wherever base is, and more
    count = np.ones(1000)
    result = paired_comparison(ACCURACY, {"correct": better, "count": count}, {"correct": base, "count": count}, 1000, 0)
    assert result.verdict == "A better" and result.low > 0
    loss = Metric(lambda sums: sums["nats"] / sums["tokens"], higher_is_better=False)
    a = {"nats": rng.random(500) + 1.0, "tokens": np.ones(500)}
    b = {"nats": a["nats"] + 0.1, "tokens": np.ones(500)}  # B's loss is higher: A better
    assert paired_comparison(loss, a, b, 500, 0).verdict == "A better"
    assert paired_comparison(loss, b, a, 500, 0).verdict == "B better"
    noise = {"nats": a["nats"] + rng.normal(0, 0.3, 500), "tokens": np.ones(500)}
    noise["nats"] -= noise["nats"].mean() - a["nats"].mean()  # same mean, different examples
    assert paired_comparison(loss, a, noise, 500, 0).verdict == "no significant difference"
