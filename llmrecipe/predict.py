"""Labels for texts from a classify artifact: what `llmrecipe predict` writes and `/v1/classify` answers.

Texts are encoded exactly as the classify step encoded its training rows (the same marker token at the pooled end,
the same cut at the artifact's `max_seq_len`), so a prediction here is the one the evaluation measured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, TextIO

from llmrecipe.errors import StepError
from llmrecipe.finetune.classify_data import encode
from llmrecipe.jsonl import json_objects


@dataclass(frozen=True)
class Prediction:
    label: str
    confidence: float
    probabilities: dict[str, float]
    """Every label's probability, in the artifact's label order."""
    cut: bool
    """The text was longer than the model's context and only its beginning was read."""

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "confidence": self.confidence, "probabilities": self.probabilities,
                "text_cut": self.cut}


class TextClassifier:
    """A classify artifact folder loaded for prediction (CPU by default)."""

    def __init__(self, folder: Path, device: str = "cpu"):
        from llmrecipe.models.classifier import load_classifier
        from llmrecipe.tokenizer.bytes import load_tokenizer

        self.model = load_classifier(folder, device)
        self.tokenizer, meta = load_tokenizer(folder)
        self.marker = meta["eot_id"]
        self.device = device
        self.name = folder.name

    @property
    def labels(self) -> list[str]:
        return self.model.labels

    def predict(self, texts: list[str], batch_size: int = 32) -> list[Prediction]:
        from llmrecipe.models.classifier import predict_probabilities

        if not texts:
            return []
        rows, cut = encode(self.tokenizer, texts, self.model.max_seq_len, self.marker, self.model.pooling)
        probabilities = predict_probabilities(self.model, rows, batch_size, self.device).tolist()  # (N, C)
        found = []
        for row, was_cut in zip(probabilities, cut):
            best = max(range(len(row)), key=row.__getitem__)
            found.append(Prediction(self.labels[best], round(row[best], 6),
                                    {label: round(p, 6) for label, p in zip(self.labels, row)}, was_cut))
        return found


def predict_file(classifier: TextClassifier, path: Path, text_field: str, out: TextIO, batch_size: int = 32,
                 chunk: int = 1024) -> dict[str, int]:
    """Each JSONL row of `path` with its prediction added (`label`, `confidence`, `probabilities`, `text_cut`,
    under `prediction`), one line per row on `out`, read and written a chunk at a time; returns the counts."""
    rows = cut = 0
    for batch in chunks(json_objects(path), chunk):
        texts = [text_of(row, number, path, text_field) for number, row in batch]
        for (_, row), prediction in zip(batch, classifier.predict(texts, batch_size)):
            out.write(json.dumps({**row, "prediction": prediction.as_dict()}, ensure_ascii=False) + "\n")
            rows, cut = rows + 1, cut + prediction.cut
    if not rows:
        raise StepError(f"{path.name} has no rows: the file is empty (or only blank lines)")
    return {"rows": rows, "texts_cut": cut}


def text_of(row: dict, number: int, path: Path, field: str) -> str:
    value = row.get(field)
    if not isinstance(value, str):
        raise StepError(f"{path.name} line {number}: no string field '{field}'; the row has {sorted(row)}. Name the "
                        "field that holds the text with --text-field")
    return value


def chunks(items: Iterator, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
