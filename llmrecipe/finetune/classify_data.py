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

import torch

from llmrecipe.errors import StepError
from llmrecipe.jsonl import json_objects

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


def read_splits(path: Path, fields: Fields, val_fraction: float) -> dict[str, list[Example]]:
    """`train`, `val` and `test` examples of a labelled JSONL file; a missing field names itself, the file and line."""
    rows = list(_read_rows(path, fields))
    splits: dict[str, list[Example]] = {"train": [], "val": [], "test": []}
    for example, split in rows:
        splits[split or "train"].append(example)
    if not splits["val"]:  # no validation rows given: hold out a hashed share of the training rows
        kept = [e for e in splits["train"] if not held_out(e.text, val_fraction)]
        splits["val"] = [e for e in splits["train"] if held_out(e.text, val_fraction)]
        splits["train"] = kept
    return splits


def _read_rows(path: Path, fields: Fields):
    """(example, split or None) per non-empty line."""
    for number, row in json_objects(path):
        yield _example(row, number, path, fields), _split(row, number, path, fields)


def _example(row: dict, number: int, path: Path, fields: Fields) -> Example:
    for role, key in (("text_field", fields.text), ("label_field", fields.label)):
        value = row.get(key)
        if value is None or isinstance(value, (dict, list, bool)):
            raise StepError(
                f"{path} line {number}: no usable '{key}' field (dataset.{role} = '{key}'); the row's keys are "
                f"{sorted(row)}; set dataset.{role} to the key that holds it"
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
    unknown = sorted(seen - set(expected))
    missing = [label for label in expected if label not in seen_train]
    problems = []
    if unknown:
        problems.append(f"the data has labels {unknown} that `labels` does not list")
    if missing:
        problems.append(f"no training row has the listed labels {missing}")
    if problems:
        raise StepError("; ".join(problems) + f" (labels = {expected}); fix the data or the recipe's `labels`")
    return list(expected)


def encode(tokenizer, texts: list[str], seq_len: int, marker_id: int, pooling: str) -> list[list[int]]:
    """Token ids per text with a marker token at the pooled end, cut to `seq_len`.

    `last` pooling appends the marker (the end-of-text id the model saw after every document), so every
    example ends on the same token whose state summarizes it; `first` prepends it, like BERT's [CLS]. A tokenizer
    that puts the marker there itself (an imported BERT's adds [CLS] ... [SEP]) is not given a second one.
    """
    rows = []
    for encoding in tokenizer.encode_batch(texts):
        ids = encoding.ids
        if pooling == "first" and ids[:1] == [marker_id]:
            rows.append(ids[:seq_len])
        elif pooling == "last" and ids[-1:] == [marker_id]:
            rows.append([*ids[: seq_len - 1], marker_id])
        else:
            ids = ids[: seq_len - 1]  # long texts keep their beginning
            rows.append([*ids, marker_id] if pooling == "last" else [marker_id, *ids])
    return rows


def class_weights(label_ids: torch.Tensor, classes: int, mode: str) -> torch.Tensor | None:
    """`balanced`: n / (classes x n_c) per class (scikit-learn's rule), so each class weighs the same in total."""
    if mode == "none":
        return None
    counts = torch.bincount(label_ids, minlength=classes).double()  # (C,)
    return (len(label_ids) / (classes * counts.clamp(min=1))).float()
