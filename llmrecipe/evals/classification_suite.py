"""The `classification` suite: a classify model on labelled JSONL rows.

Every metric is a function of per-example column sums (so each gets a bootstrap interval and `compare` can pair
two models): per class c, `true_c` (the label is c), `pred_c` (the prediction is c) and `tp_c` (both); per
confidence bin k, `conf_k` and `hit_k` (the confidence and correctness of the examples that fall in it) for the
expected calibration error. Error analysis: the most confident mistakes on the scored split, and the training
rows the model most confidently disagrees with (likely mislabelled), listed for review.
"""

from __future__ import annotations

import numpy as np

from llmrecipe.errors import StepError
from llmrecipe.classification import (
    CALIBRATION_BINS,
    class_scores,
    confident_mistakes,
    confusion_matrix,
    plot_confusion_matrix,
)
from llmrecipe.evals.jsonl import suite_key
from llmrecipe.evals.stats import Metric
from llmrecipe.evals.suite import SuiteEnv, SuiteResult, proportion
from llmrecipe.finetune.classify_data import Example, Fields, encode, foreign_labels, read_splits
from llmrecipe.models.classifier import Classifier, predict_probabilities
from llmrecipe.recipe.evaluate import ClassificationSuite

EXCERPT_CHARS = 240


def _per_class(sums: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per class from the summed columns (0 where undefined, as scikit-learn's zero_division=0)."""
    classes = sum(1 for name in sums if name.startswith("true_"))
    tp = np.array([sums[f"tp_{c}"] for c in range(classes)])
    predicted = np.array([sums[f"pred_{c}"] for c in range(classes)])
    actual = np.array([sums[f"true_{c}"] for c in range(classes)])
    precision = np.divide(tp, predicted, out=np.zeros(classes), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(classes), where=actual > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(classes), where=precision + recall > 0)
    return precision, recall, f1


def _micro(sums: dict[str, float]) -> float:
    """Pooled over classes: with one label per example, micro precision = recall = F1 = accuracy."""
    return sums["correct"] / sums["count"] if sums["count"] else float("nan")


def _ece(sums: dict[str, float]) -> float:
    gaps = [abs(sums[f"hit_{k}"] - sums[f"conf_{k}"]) for k in range(CALIBRATION_BINS)]
    return sum(gaps) / sums["count"] if sums["count"] else float("nan")


METRICS = {
    "accuracy": proportion("correct"),
    "macro_precision": Metric(lambda sums: float(_per_class(sums)[0].mean()), higher_is_better=True),
    "macro_recall": Metric(lambda sums: float(_per_class(sums)[1].mean()), higher_is_better=True),
    "macro_f1": Metric(lambda sums: float(_per_class(sums)[2].mean()), higher_is_better=True),
    "micro_precision": Metric(_micro, higher_is_better=True),
    "micro_recall": Metric(_micro, higher_is_better=True),
    "micro_f1": Metric(_micro, higher_is_better=True),
    "ece": Metric(_ece, higher_is_better=False),
}


def run(config: ClassificationSuite, env: SuiteEnv) -> SuiteResult:
    model = env.model
    if not isinstance(model, Classifier):
        raise StepError(f"suite {env.name}: a classification suite needs a classifier (a `finetune` step with "
                        "task = 'classify'); this model is a language model")
    fields = Fields(config.text_field, config.label_field, config.split_field, suite_key(env.ctx.name, env.name))
    splits = read_splits(env.data_path, fields, config.val_fraction)
    rows = scored_rows(splits, config.split)[: config.limit]
    labels = label_ids(rows, model.labels, env.data_path.name, fields.key)
    probabilities, cut = classify(model, rows, env)
    columns = metric_columns(probabilities, labels, len(model.labels))
    matrix = confusion_matrix(labels, probabilities.argmax(axis=1), len(model.labels))
    plot = plot_confusion_matrix(matrix, model.labels, env.out_dir / f"{env.name}_confusion.png",
                                 f"{env.name} ({len(rows)} examples)")
    tables = {"per class": per_class_table(matrix, model.labels)}
    if config.review:
        tables[MISLABELLED] = likely_mislabelled(model, splits["train"], config.review, env)
    seen = {e.text for e in splits["train"]} if config.split != "train" else set()
    also_in_train = [row for row in rows if row.text in seen]
    if also_in_train:
        tables[IN_TRAIN] = [{"line": row.line, "text": row.text[:EXCERPT_CHARS], "label": row.label}
                            for row in also_in_train[:LISTED_IN_TRAIN]]

    def shown(i: int) -> dict:
        return {**described(rows[i], probabilities[i], model.labels), "in_train": rows[i].text in seen}

    return SuiteResult(
        columns=columns,
        examples=[shown(i) for i in range(len(rows))],
        worst=[shown(i) for i in confident_mistakes(probabilities, labels, env.worst)],
        extra={"majority_baseline": float(np.bincount(labels, minlength=len(model.labels)).max() / len(labels)),
               "texts_cut": cut, "rows_also_in_train": len(also_in_train)},
        plots=[plot.name],
        tables=tables,
    )


def scored_rows(splits: dict[str, list[Example]], split: str) -> list[Example]:
    if split == "all":
        return sorted((e for rows in splits.values() for e in rows), key=lambda e: e.line)
    return splits[split]


def label_ids(rows: list[Example], labels: list[str], file_name: str, key: str) -> np.ndarray:
    """Class ids of the rows; labels the model was not trained on are an error that names them."""
    index = {label: i for i, label in enumerate(labels)}
    problem = foreign_labels({row.label for row in rows}, labels, file_name, key)
    if problem:
        raise StepError(problem)
    if not rows:
        raise StepError(f"{file_name}: no rows in the chosen split; pick another `split` (or `all`)")
    return np.array([index[row.label] for row in rows], dtype=np.int64)


def classify(model: Classifier, rows: list[Example], env: SuiteEnv) -> tuple[np.ndarray, int]:
    """Class probabilities (N, C), encoded as the classify step encoded its training rows; and how many texts
    were longer than the model's context (each keeps its beginning)."""
    encoded, cut = encode(env.tokenizer, [row.text for row in rows], model.max_seq_len, env.eot_id, model.pooling)
    return predict_probabilities(model, encoded, env.batch_size, env.device).double().numpy(), sum(cut)


def metric_columns(probabilities: np.ndarray, labels: np.ndarray, classes: int) -> dict[str, np.ndarray]:
    """Per-example columns whose sums give every metric in METRICS."""
    predictions = probabilities.argmax(axis=1)  # (N,)
    confidence = probabilities.max(axis=1)  # (N,)
    correct = (predictions == labels).astype(np.float64)
    columns = {"correct": correct, "count": np.ones(len(labels))}
    for c in range(classes):
        columns[f"true_{c}"] = (labels == c).astype(np.float64)
        columns[f"pred_{c}"] = (predictions == c).astype(np.float64)
        columns[f"tp_{c}"] = columns[f"true_{c}"] * correct
    which = np.clip(np.ceil(confidence * CALIBRATION_BINS).astype(np.int64) - 1, 0, CALIBRATION_BINS - 1)
    for k in range(CALIBRATION_BINS):  # the same bins as expected_calibration_error
        columns[f"conf_{k}"] = np.where(which == k, confidence, 0.0)
        columns[f"hit_{k}"] = np.where(which == k, correct, 0.0)
    return columns


def per_class_table(matrix: np.ndarray, labels: list[str]) -> list[dict]:
    scores = class_scores(matrix)
    return [
        {"class": label, "precision": round(scores.precision[c], 4), "recall": round(scores.recall[c], 4),
         "f1": round(scores.f1[c], 4), "support": scores.support[c]}
        for c, label in enumerate(labels)
    ]


MISLABELLED = "training rows the model confidently contradicts (check their labels)"
"""The review table: the model predicts another label with high confidence. Often a wrong label, sometimes a hard
row or a model mistake; a person decides."""
IN_TRAIN = "scored rows whose exact text is also a training row (they flatter the scores)"
LISTED_IN_TRAIN = 20
"""Rows listed in that table; `rows_also_in_train` counts them all."""


def likely_mislabelled(model: Classifier, train: list[Example], k: int, env: SuiteEnv) -> list[dict]:
    """The training rows whose label the model most confidently contradicts: candidates for relabelling."""
    if not train:
        return []
    probabilities, _ = classify(model, train, env)
    labels = label_ids(train, model.labels, env.data_path.name, suite_key(env.ctx.name, env.name))
    return [described(train[i], probabilities[i], model.labels) for i in confident_mistakes(probabilities, labels, k)]


def described(row: Example, probabilities: np.ndarray, labels: list[str]) -> dict:
    predicted = int(np.argmax(probabilities))
    return {"line": row.line, "text": row.text[:EXCERPT_CHARS], "label": row.label, "predicted": labels[predicted],
            "confidence": round(float(probabilities[predicted]), 4)}
