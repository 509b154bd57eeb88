"""Classification metrics: accuracy, per-class and macro/micro precision, recall and F1, confusion matrix,
expected calibration error, and the confident mistakes worth a human look.

Labels are integer class ids 0..C-1. A class that is never predicted has precision 0 (and one that never
occurs has recall 0), as scikit-learn's `zero_division=0` does, so a macro average is never undefined.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIBRATION_BINS = 15
"""Equal-width confidence bins for ECE (Guo et al., 2017 use 15)."""


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return matrix


@dataclass(frozen=True)
class ClassScores:
    accuracy: float
    precision: list[float]
    """Per class."""
    recall: list[float]
    f1: list[float]
    support: list[int]
    """How many examples of each class there are."""
    macro_precision: float
    macro_recall: float
    macro_f1: float
    """Unweighted mean over classes: every class counts the same however rare it is."""
    micro_precision: float
    micro_recall: float
    micro_f1: float
    """From the pooled counts; for single-label classification all three equal the accuracy."""


def class_scores(matrix: np.ndarray) -> ClassScores:
    """Every score from a confusion matrix (rows true, columns predicted)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)  # (C,)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)  # (C,) each
    precision = _safe_divide(true_positive, predicted)
    recall = _safe_divide(true_positive, actual)
    f1 = _safe_divide(2 * precision * recall, precision + recall)
    total = matrix.sum()
    micro_p = _safe_divide(true_positive.sum(), predicted.sum())
    micro_r = _safe_divide(true_positive.sum(), actual.sum())
    micro_f1 = _safe_divide(2 * micro_p * micro_r, micro_p + micro_r)
    return ClassScores(
        accuracy=float(true_positive.sum() / total) if total else 0.0,
        precision=precision.tolist(),
        recall=recall.tolist(),
        f1=f1.tolist(),
        support=[int(x) for x in actual],
        macro_precision=float(precision.mean()),
        macro_recall=float(recall.mean()),
        macro_f1=float(f1.mean()),
        micro_precision=float(micro_p),
        micro_recall=float(micro_r),
        micro_f1=float(micro_f1),
    )


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """Sum over equal-width confidence bins of (share of examples) x |accuracy - mean confidence|.

    `confidences` are the probabilities of the predicted classes, `correct` whether each prediction was
    right. Bins are (0, 1/bins], (1/bins, 2/bins], ...; a confidence of exactly 0 goes in the first bin.
    """
    confidences = np.asarray(confidences, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if not len(confidences):
        return 0.0
    which = np.clip(np.ceil(confidences * bins).astype(np.int64) - 1, 0, bins - 1)  # (N,)
    # Per bin: |sum of correct - sum of confidences| = examples in the bin x |accuracy - mean confidence|.
    gap = np.abs(np.bincount(which, weights=correct, minlength=bins) - np.bincount(which, weights=confidences, minlength=bins))
    return float(gap.sum() / len(confidences))


def confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, k: int) -> list[int]:
    """Indices of the k wrong predictions made with the highest confidence, most confident first.

    On training data these are the likely mislabelled examples: the model firmly disagrees with the label.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)  # (N, C)
    predictions = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predictions != np.asarray(labels))
    order = np.argsort(-probabilities[wrong, predictions[wrong]], kind="stable")
    return [int(i) for i in wrong[order][:k]]


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path, title: str) -> Path:
    """A PNG of the confusion matrix with counts in the cells (rows true, columns predicted)."""
    from llmrecipe.plots import pyplot

    plt = pyplot()
    size = max(3.0, 0.6 * len(class_names) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    high = matrix.max() if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(column, row, str(count), ha="center", va="center", color="white" if count > high / 2 else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
    return path


def _safe_divide(numerator: np.ndarray | float, denominator: np.ndarray | float) -> np.ndarray:
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
