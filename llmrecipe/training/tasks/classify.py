"""Classification: whole labelled texts per example, a (class-weighted) cross-entropy on the pooled head's logits,
and validation loss, accuracy and macro-F1.

A step's examples are consecutive slices of a per-epoch permutation drawn from (seed, epoch), so the data cursor of
a resumed run is its step number. Each micro-batch is padded on the right to its own longest text.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmrecipe.classification import class_scores
from llmrecipe.models.classifier import pad_right
from llmrecipe.training.task import Batch, StepBatch, epoch_order


@dataclass
class LabelledRows:
    rows: list[list[int]]
    """Token ids per example (unpadded)."""
    labels: torch.Tensor
    """Class ids (N,)."""

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, index: list[int]) -> Batch:
        ids, lengths = pad_right([self.rows[i] for i in index])  # (b, T), (b,)
        return {"ids": ids, "lengths": lengths, "labels": self.labels[index]}


class ClassifyObjective(nn.Module):
    """Summed statistics of a batch: the training loss (class-weighted) with its total weight, the unweighted
    negative log-likelihood, and the confusion matrix (rows true class, columns predicted)."""

    def __init__(self, classifier: nn.Module, classes: int, weights: torch.Tensor | None):
        super().__init__()
        self.model, self.classes = classifier, classes
        self.register_buffer("weights", weights if weights is not None else torch.ones(classes), persistent=False)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.model(ids, lengths).float()  # (B, C)
        loss = F.cross_entropy(logits, labels, weight=self.weights, reduction="sum")
        truth = F.one_hot(labels, self.classes).float()  # (B, C)
        chosen = F.one_hot(logits.argmax(dim=-1), self.classes).float()  # (B, C)
        return {"loss": loss, "count": self.weights[labels].sum(),
                "nll": F.cross_entropy(logits, labels, reduction="sum"), "examples": truth.sum(),
                "confusion": truth.T @ chosen}  # (C, C): a product, not a bincount, keeps its shape static


class ClassifyTask:
    variable_shapes = True  # each micro-batch is as long as its longest text

    def __init__(self, train: LabelledRows, val: LabelledRows | None, classes: int, weights: torch.Tensor | None,
                 seed: int, batch_size: int, eval_batches: int, micro_batch_size: int):
        self.train, self.val, self.classes, self.weights = train, val, classes, weights
        self.seed, self.batch_size, self.eval_batches, self.micro_batch_size = seed, batch_size, eval_batches, micro_batch_size
        self.examples = len(train)
        self._orders: dict[int, torch.Tensor] = {}

    def objective(self, model: nn.Module) -> nn.Module:
        return ClassifyObjective(model, self.classes, self.weights)

    def train_batch(self, step: int, rows: range, micro_batch_size: int) -> StepBatch:
        index = epoch_order(self.seed, step, self.batch_size, len(self.train), self._orders).tolist()
        labels = self.train.labels[index]
        weight = float(self.weights[labels].sum()) if self.weights is not None else float(len(index))
        tokens = sum(len(self.train.rows[i]) for i in index)
        mine = index[rows.start : rows.stop]
        pieces = [self.train.batch(mine[i : i + micro_batch_size]) for i in range(0, len(mine), micro_batch_size)]
        return StepBatch(pieces, weight, tokens)

    def validation_batches(self) -> list[Batch]:
        """The first `eval_batches` batches of held-out examples, grouped by length (less padding)."""
        if self.val is None or not len(self.val):
            return []
        count = min(len(self.val), self.eval_batches * self.batch_size)
        order = sorted(range(count), key=lambda i: len(self.val.rows[i]))
        step = self.micro_batch_size
        return [self.val.batch(order[i : i + step]) for i in range(0, count, step)]

    def final_batches(self) -> None:
        return None

    def validation_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        scores = class_scores(totals["confusion"].cpu().numpy())
        return {"val_loss": float(totals["nll"]) / max(1.0, float(totals["examples"])),
                "val_accuracy": scores.accuracy, "val_macro_f1": scores.macro_f1}
