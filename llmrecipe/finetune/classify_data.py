"""Labelled examples for classification: read from JSONL, split, checked against the label set, encoded, batched.

A row's split comes from its split field when it has one (`train`, `validation`/`val`, `test`); otherwise a
stable hash of its text holds out a fraction for validation. Rows marked `train` lend a hashed fraction to
validation too when the file has no validation rows (a train/test file such as rotten tomatoes), so early
stopping never looks at the test rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmrecipe.errors import StepError
from llmrecipe.jsonl import json_objects

if TYPE_CHECKING:  # `validate` checks rows with this module without loading torch
    import torch

SPLITS = {"train": "train", "validation": "val", "val": "val", "test": "test"}
"""Split-field value -> the split it puts the row in."""


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    line: int
    """Line number in the file (1-based), to point a reviewer at the row."""


@dataclass(frozen=True)
class Fields:
    """The row keys of a labelled JSONL file (the recipe's `dataset` table)."""

    text: str = "text"
    label: str = "label"
    split: str = "split"
    key: str = "dataset"
    """Where the recipe sets these keys (e.g. `steps.clf.dataset`, `steps.eval.suites.test`), for messages."""


def read_splits(path: Path, fields: Fields, val_fraction: float) -> dict[str, list[Example]]:
    """`train`, `val` and `test` examples of a labelled JSONL file; a missing field names itself, the file and line."""
    rows = list(labelled_rows(path, fields))
    if not rows:
        raise StepError(f"{path.name} has no rows: the file is empty (or only blank lines)")
    splits: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for example, split in rows:
        splits[split or "train"].append(example)
    if not splits["val"]:  # no validation rows given: hold out a hashed share of the training rows
        kept = [e for e in splits["train"] if not held_out(e.text, val_fraction)]
        splits["val"] = [e for e in splits["train"] if held_out(e.text, val_fraction)]
        splits["train"] = kept
    return splits


def labelled_rows(path: Path, fields: Fields, limit: int | None = None):
    """(example, split or None) per non-empty line, the first `limit` lines when given."""
    for count, (number, row) in enumerate(json_objects(path)):
        if limit is not None and count >= limit:
            return
        yield _example(row, number, path, fields), _split(row, number, path, fields)


def _example(row: dict, number: int, path: Path, fields: Fields) -> Example:
    for role, key in (("text_field", fields.text), ("label_field", fields.label)):
        value = row.get(key)
        if value is None or isinstance(value, (dict, list, bool)):
            raise StepError(
                f"{path.name} line {number}: no usable '{key}' field ({fields.key}.{role} = '{key}'); the row's keys "
                f"are {sorted(row)}; set {fields.key}.{role} to the key that holds it"
            )
    return Example(text=str(row[fields.text]), label=str(row[fields.label]), line=number)


def _split(row: dict, number: int, path: Path, fields: Fields) -> str | None:
    value = row.get(fields.split)
    if value is None:
        return None
    if not isinstance(value, str) or value not in SPLITS:
        raise StepError(f"{path} line {number}: '{fields.split}' = {value!r} is not one of {sorted(SPLITS)}")
    return SPLITS[value]


def held_out(text: str, fraction: float) -> bool:
    """A stable choice (the same in every run and on every machine): the text's blake2b digest under `fraction`."""
    digest = int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")
    return digest / 2**64 < fraction


def label_set(train: list[Example], held: list[Example], expected: list[str] | None) -> list[str]:
    """The classes in order: `expected` when given (the data must match it exactly), else the sorted train labels.

    Raised before training: labels in the data the recipe does not list, listed labels no training row has.
    """
    seen_train = {e.label for e in train}
    seen = seen_train | {e.label for e in held}
    if expected is None:
        unseen = sorted(seen - seen_train)
        if unseen:
            raise StepError(f"labels {unseen} occur in held-out rows but never in training rows; list the label set "
                            "in `labels` or add training rows for them")
        if len(seen_train) < 2:
            raise StepError(f"the training rows have {len(seen_train)} distinct label(s) {sorted(seen_train)}; "
                            "classification needs at least two")
        return sorted(seen_train)
    problems = [unknown_labels(seen, expected)] if unknown_labels(seen, expected) else []
    missing = [label for label in expected if label not in seen_train]
    if missing:
        problems.append(f"no training row has the listed labels {missing}")
    if problems:
        raise StepError("; ".join(problems) + f" (labels = {expected}); fix the data or the recipe's `labels`")
    return list(expected)


def foreign_labels(seen: set[str], classes: list[str], file_name: str, key: str) -> str | None:
    """The problem with evaluating a classifier on labels it was not trained on (a sample shows it at `plan`)."""
    unknown = sorted(seen - set(classes))
    if not unknown:
        return None
    return (f"{file_name}: labels {unknown} are not among the model's classes {classes}; evaluate on data with the "
            f"model's label set (or fix {key}.label_field)")


def unknown_labels(seen: set[str], expected: list[str]) -> str | None:
    """The problem with data labels the recipe's `labels` does not list (a sample of rows can show it at `plan`)."""
    unknown = sorted(seen - set(expected))
    return f"the data has labels {unknown} that `labels` does not list" if unknown else None


def encode(tokenizer, texts: list[str], seq_len: int, marker_id: int, pooling: str) -> tuple[list[list[int]], list[bool]]:
    """Token ids per text with a marker token at the pooled end, cut to `seq_len`; and per text whether it was cut
    (a long text keeps its beginning), so callers can say so.

    `last` pooling appends the marker (the end-of-text id the model saw after every document), so every
    example ends on the same token whose state summarizes it; `first` prepends it, like BERT's [CLS]. A tokenizer
    that puts the marker there itself (an imported BERT's adds [CLS] ... [SEP]) is not given a second one.
    """
    rows, cut = [], []
    for encoding in tokenizer.encode_batch(texts):
        ids = encoding.ids
        if pooling == "first" and ids[:1] == [marker_id]:
            ids = ids[1:]  # the tokenizer's own marker: the row gets it back below
        elif pooling == "last" and ids[-1:] == [marker_id]:
            ids = ids[:-1]
        cut.append(len(ids) > seq_len - 1)
        ids = ids[: seq_len - 1]  # long texts keep their beginning
        rows.append([*ids, marker_id] if pooling == "last" else [marker_id, *ids])
    return rows, cut


def class_weights(label_ids: torch.Tensor, classes: int, mode: str) -> torch.Tensor | None:
    """`balanced`: n / (classes x n_c) per class (scikit-learn's rule), so each class weighs the same in total."""
    if mode == "none":
        return None
    import torch

    counts = torch.bincount(label_ids, minlength=classes).double()  # (C,)
    return (len(label_ids) / (classes * counts.clamp(min=1))).float()
