"""Language modelling on windows of a packed token file: next tokens (causal decoders) or masked tokens (encoders).

Each step's windows are a pure function of (seed, step): offsets drawn uniformly over the file, and for masked
language modelling the masks too, so the data cursor of a resumed run is its step number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from llmrecipe.models.shape import ModelShape
from llmrecipe.training.loss import IGNORE, cross_entropy_sum
from llmrecipe.training.task import Batch, StepBatch, micro_batches

EVAL_LOGITS = 1 << 22
"""Logits (windows x positions x vocabulary) per validation forward pass: 16 MB in fp32. No activations are kept
for a backward pass there, so windows go through in chunks bounded by their logits, not by the training micro-batch:
tiny forwards of a small model spend more time in overhead than in matmuls."""


class TokenFile:
    def __init__(self, path: Path, dtype: str):
        self.tokens = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r") if path.stat().st_size else np.zeros(0, dtype)

    def __len__(self) -> int:
        return len(self.tokens)

    def windows(self, offsets: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, each (B, seq_len), for windows starting at `offsets`."""
        if not len(offsets):
            empty = torch.zeros(0, seq_len, dtype=torch.long)
            return empty, empty
        rows = np.stack([self.tokens[o : o + seq_len + 1] for o in offsets.tolist()]).astype(np.int64)  # (B, T+1)
        rows = torch.from_numpy(rows)
        return rows[:, :-1], rows[:, 1:]


def step_offsets(seed: int, step: int, count: int, n_tokens: int, seq_len: int) -> torch.Tensor:
    """`count` window starts for optimizer step `step`, uniform over the file."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randint(0, n_tokens - seq_len, (count,), generator=generator)


def validation_offsets(seed: int, count: int, n_tokens: int, seq_len: int) -> torch.Tensor:
    """The same validation windows at every evaluation, so the curve compares like with like."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 - 1)
    return torch.randint(0, n_tokens - seq_len, (count,), generator=generator)


def tiled_offsets(count: int, n_tokens: int, seq_len: int) -> torch.Tensor:
    """Up to `count` non-overlapping windows spread evenly over the file: all of them (every token predicted once)
    when it holds no more. No sampling, so a score over all of them has no sampling noise."""
    tiles = torch.arange(0, n_tokens - seq_len, seq_len)  # (M,) each window also needs its next token
    if count >= len(tiles):
        return tiles
    return tiles[torch.linspace(0, len(tiles) - 1, count).round().long()]


def mask_seed(seed: int, step: int) -> int:
    """Seed of step `step`'s masks, apart from the stream that draws window offsets."""
    return (seed * 1_000_003 + step) * 2 + 1


class Masks:
    """BERT's corruption (Devlin et al., 2019) drawn for a whole batch of windows: of the chosen positions 80% become
    the mask token, 10% a random token, 10% stay. Drawn for the global batch, applied to any rows of it."""

    def __init__(self, shape: ModelShape, rows: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        size = (rows, shape.seq_len)
        self.chosen = torch.rand(size, generator=generator) < shape.mask_fraction  # (B, T)
        roll = torch.rand(size, generator=generator)  # (B, T)
        self.random_ids = torch.randint(1, shape.mask_token_id, size, generator=generator)  # real tokens only
        self.to_mask, self.to_random = self.chosen & (roll < 0.8), self.chosen & (roll >= 0.8) & (roll < 0.9)
        self.mask_token_id = shape.mask_token_id

    def apply(self, x: torch.Tensor, rows: range) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets for windows `x` (b, T), which are rows `rows` of the batch: the original tokens are the
        targets at the chosen positions, IGNORE elsewhere."""
        part = slice(rows.start, rows.stop)
        targets = torch.where(self.chosen[part], x, IGNORE)
        inputs = torch.where(self.to_mask[part], self.mask_token_id, x)
        return torch.where(self.to_random[part], self.random_ids[part], inputs), targets


class LanguageModelObjective(nn.Module):
    """Summed cross-entropy of a language model's predictions at its target positions (IGNORE elsewhere).

    Packed documents (SFT) come with each token's `positions` and `documents`: the model then attends within
    documents only (training/tasks/packed.py)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, positions: torch.Tensor | None = None,
                documents: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if documents is None:
            logits = self.model(inputs)  # (B, T, V)
        else:
            from llmrecipe.training.tasks.packed import PackedRows

            logits = self.model(inputs, PackedRows(positions, documents))  # (B, T, V)
        return {"loss": cross_entropy_sum(logits, targets), "count": (targets != IGNORE).sum()}


class WindowTask:
    """Causal (next token) or masked language modelling on windows of `train`, validated on windows of `val`."""

    variable_shapes = False

    def __init__(self, shape: ModelShape, train: TokenFile, val: TokenFile | None, seed: int, batch_size: int,
                 eval_batches: int, final_eval_batches: int | None = None, masked: bool = False):
        self.shape, self.train, self.val, self.seed = shape, train, val, seed
        self.batch_size, self.eval_batches, self.final_eval_batches = batch_size, eval_batches, final_eval_batches
        self.masked = masked
        self.examples = len(train) / shape.seq_len
        self._validation: list[Batch] | None = None

    def objective(self, model: nn.Module) -> nn.Module:
        return LanguageModelObjective(model)

    def train_batch(self, step: int, rows: range, micro_batch_size: int) -> StepBatch:
        T = self.shape.seq_len
        offsets = step_offsets(self.seed, step, self.batch_size, len(self.train), T)  # the global batch's windows
        x, y = self.train.windows(offsets[rows.start : rows.stop], T)  # (b, T) each: only this process's rows
        normalizer = self.batch_size * T
        if self.masked:
            masks = Masks(self.shape, self.batch_size, mask_seed(self.seed, step))
            x, y = masks.apply(x, rows)
            normalizer = int(masks.chosen.sum())
        return StepBatch(micro_batches({"inputs": x, "targets": y}, micro_batch_size), max(1, normalizer),
                         self.batch_size * T)

    def validation_batches(self) -> list[Batch]:
        """Windows at fixed offsets, whole batches' worth (not micro-batches: they must not depend on how many
        processes share a step)."""
        if self._validation is None:
            self._validation = self._windows(validation_offsets) if self.val is not None else []
        return self._validation

    def final_batches(self) -> list[Batch] | None:
        """Non-overlapping windows spread over the validation split, `final_eval_batches` batches' worth."""
        if self.final_eval_batches is None or self.val is None:
            return None
        offsets = tiled_offsets(self.final_eval_batches * self.batch_size, len(self.val), self.shape.seq_len)
        return self._chunks(offsets)

    def validation_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"val_loss": float(totals["loss"]) / max(1.0, float(totals["count"]))}

    def _windows(self, draw) -> list[Batch]:
        offsets = draw(self.seed, self.eval_batches * self.batch_size, len(self.val), self.shape.seq_len)
        return self._chunks(offsets)

    def _chunks(self, offsets: torch.Tensor) -> list[Batch]:
        x, y = self.val.windows(offsets, self.shape.seq_len)  # (N, T) each
        if self.masked:
            x, y = Masks(self.shape, len(x), mask_seed(self.seed, -1)).apply(x, range(len(x)))
        chunk = max(1, EVAL_LOGITS // (self.shape.seq_len * self.shape.vocab_size))
        return micro_batches({"inputs": x, "targets": y}, chunk)

