"""Supervised fine-tuning on packed rows: several examples per training row, each blind to the others.

Each example keeps its own next-token shift (its last token predicts nothing in the next example), its own
positions (counted from 0), and a block-diagonal causal mask: a token attends only to earlier tokens of the same
example. So an example's logits are those it gets alone in a row (tests/test_finetune.py checks this). The rows
reach the model as an `AttentionLayout` (models/attention.py): a dense mask on CPUs and in eager mode, FlexAttention's
block-sparse mask in a compiled model on a GPU. Layouts apply no attention dropout: packed SFT trains with the
residual dropout only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch
from torch import nn

from llmrecipe.models.attention import document_block_mask, document_mask, flex_attention, masked_attention
from llmrecipe.training.loss import IGNORE
from llmrecipe.training.task import Batch, StepBatch, epoch_order, micro_batches
from llmrecipe.training.tasks.windows import LanguageModelObjective

PADDING = -1
"""Example index of the unused tail of a row."""


class Example(Protocol):
    ids: list[int]
    """Token ids of the rendered example."""
    targets: list[bool]
    """Per id: whether it is a training target (an assistant's token, the end-of-turn token)."""


@dataclass
class Packed:
    """N packed rows of T positions."""

    inputs: torch.Tensor  # (N, T) token ids
    targets: torch.Tensor  # (N, T) next token where it is a target, else IGNORE
    positions: torch.Tensor  # (N, T) position within the token's own example
    documents: torch.Tensor  # (N, T) which example of the row the token belongs to; PADDING for the tail

    def __len__(self) -> int:
        return self.inputs.size(0)

    def rows(self, index: torch.Tensor) -> Batch:
        return {"inputs": self.inputs[index], "targets": self.targets[index], "positions": self.positions[index],
                "documents": self.documents[index]}


def pack(examples: Sequence[Example], seq_len: int) -> Packed:
    """First fit in the given order: an example goes in the current row if it fits, else it starts the next row.
    Examples must already fit in a row (`seq_len + 1` ids: inputs and their next tokens); SFT data is fitted so by
    llmrecipe/finetune/fit.py, which keeps the response rather than cutting it off."""
    rows: list[list[tuple[list[int], list[int]]]] = [[]]
    used = 0
    for example in examples:
        ids = example.ids
        if len(ids) > seq_len + 1:
            raise ValueError(f"an example of {len(ids)} tokens does not fit a row of {seq_len} + 1")
        if len(ids) < 2:
            continue  # nothing to predict
        x, y = shifted(example)
        if used + len(x) > seq_len:
            rows.append([])
            used = 0
        rows[-1].append((x, y))
        used += len(x)
    rows = [row for row in rows if row]
    shape = (len(rows), seq_len)
    packed = Packed(
        inputs=torch.zeros(shape, dtype=torch.long), targets=torch.full(shape, IGNORE, dtype=torch.long),
        positions=torch.zeros(shape, dtype=torch.long), documents=torch.full(shape, PADDING, dtype=torch.long),
    )
    for r, row in enumerate(rows):
        start = 0
        for d, (x, y) in enumerate(row):
            end = start + len(x)
            packed.inputs[r, start:end] = torch.tensor(x)
            packed.targets[r, start:end] = torch.tensor(y)
            packed.positions[r, start:end] = torch.arange(len(x))
            packed.documents[r, start:end] = d
            start = end
    return packed


class PackedRows:
    """The attention layout of a batch of packed rows, handed to `model(idx, layout)`: each token's position in its
    example, and attention within examples only."""

    def __init__(self, positions: torch.Tensor, documents: torch.Tensor):
        self.positions, self.documents = positions, documents  # (B, T) each
        self._mask = None

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self._mask is None:  # built at the first layer, shared by the rest
            fused = q.is_cuda and torch.compiler.is_compiling()  # FlexAttention is fused only when compiled
            self._mask = (document_block_mask if fused else document_mask)(self.documents)
        if not isinstance(self._mask, torch.Tensor):
            return flex_attention(q, k, v, self._mask)
        return masked_attention(q, k, v, self._mask)


class PackedTask:
    """SFT on packed rows: the loss on target tokens only, summed over a step's rows and divided by their count."""

    variable_shapes = False

    def __init__(self, train: Packed, val: Packed | None, seed: int, batch_size: int, eval_batches: int,
                 micro_batch_size: int):
        self.train, self.val, self.seed, self.batch_size = train, val, seed, batch_size
        self.eval_batches, self.micro_batch_size = eval_batches, micro_batch_size
        self.examples = len(train)
        self._orders: dict[int, torch.Tensor] = {}

    def objective(self, model: nn.Module) -> nn.Module:
        return LanguageModelObjective(model)

    def train_batch(self, step: int, rows: range, micro_batch_size: int) -> StepBatch:
        index = epoch_order(self.seed, step, self.batch_size, len(self.train), self._orders)  # the global batch's rows
        targets = int((self.train.targets[index] != IGNORE).sum())
        tokens = int((self.train.documents[index] != PADDING).sum())
        mine = self.train.rows(index[rows.start : rows.stop])
        return StepBatch(micro_batches(mine, micro_batch_size), max(1, targets), tokens)

    def validation_batches(self) -> list[Batch]:
        """The first `eval_batches` batches of held-out rows (the same every time)."""
        if self.val is None or not len(self.val):
            return []
        index = torch.arange(min(len(self.val), self.eval_batches * self.batch_size))
        return micro_batches(self.val.rows(index), self.micro_batch_size)

    def final_batches(self) -> None:
        return None

    def validation_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"val_loss": float(totals["loss"]) / max(1.0, float(totals["count"]))}


def shifted(example: Example) -> tuple[list[int], list[int]]:
    """Inputs and next-token targets of a sequence; targets outside the answer are IGNORE."""
    ids, targets = example.ids, example.targets
    return ids[:-1], [token if target else IGNORE for token, target in zip(ids[1:], targets[1:])]
