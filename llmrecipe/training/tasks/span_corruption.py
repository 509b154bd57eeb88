"""Span corruption (Raffel et al., 2020), the pre-training task of encoder-decoders.

Each example is a run of consecutive tokens of the packed train split. About `noise_density` of them, in spans of
mean length `mean_span_length`, are corrupted: kept and corrupted spans alternate (a kept one first), their lengths
drawn by random segmentation. The encoder input holds the kept tokens with each corrupted span replaced by one
sentinel (sentinel i has id `top_sentinel_id - i`, numbered down from the top of the vocabulary), then end-of-text;
the target lists each sentinel followed by its span, then end-of-text. The raw length is chosen so that inputs are
exactly `seq_len` and targets exactly `target_len` tokens: no padding (models/t5: span_corruption_lengths).

Offsets and masks are a pure function of (seed, step), drawn for the global batch, so resume is exact and any
number of processes agree on it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from llmrecipe.models.shape import ModelShape
from llmrecipe.models.t5 import noise_counts, span_corruption_lengths
from llmrecipe.training.task import Batch, StepBatch, micro_batches
from llmrecipe.training.tasks.seq2seq import Seq2SeqObjective, decoder_inputs
from llmrecipe.training.tasks.windows import EVAL_LOGITS, TokenFile, mask_seed, step_offsets, validation_offsets


def random_segmentation(items: int, segments: int, generator: torch.Generator) -> torch.Tensor:
    """`items` split into `segments` non-empty runs, every such split equally likely -> their lengths (segments,)."""
    cuts = torch.randperm(items - 1, generator=generator)[: segments - 1].sort().values + 1
    bounds = torch.cat([torch.tensor([0]), cuts, torch.tensor([items])])
    return bounds.diff()


def noise_mask(length: int, noise_density: float, mean_span_length: float, generator: torch.Generator) -> torch.Tensor:
    """(length,) bool, True = corrupted: kept and corrupted spans alternating, a kept span first."""
    noise, spans = noise_counts(length, noise_density, mean_span_length)
    runs = torch.stack([random_segmentation(length - noise, spans, generator),
                        random_segmentation(noise, spans, generator)], dim=1).reshape(-1)  # kept, noise, kept, ...
    return torch.tensor([False, True]).repeat(spans).repeat_interleave(runs)


def corrupt(tokens: torch.Tensor, mask: torch.Tensor, top_sentinel_id: int, eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One example's tokens (N,) and noise mask (N,) -> (input ids, target ids)."""
    previous = torch.cat([torch.tensor([False]), mask[:-1]])  # (N,) whether the token before was corrupted
    noise_start = mask & ~previous  # first token of each corrupted span
    sentinels = top_sentinel_id - (noise_start.cumsum(0) - 1)  # (N,) the sentinel of the span a token is in or after
    inputs = torch.where(noise_start, sentinels, tokens)[~mask | noise_start]
    # in the target, each kept span gives way to the sentinel of the corrupted span that follows it
    kept_start = ~mask & torch.cat([torch.tensor([True]), previous[1:]])
    next_sentinel = top_sentinel_id - (kept_start.cumsum(0) - 1)
    targets = torch.where(kept_start, next_sentinel, tokens)[mask | kept_start]  # the example ends corrupted
    eos = torch.tensor([eos_id])
    return torch.cat([inputs, eos]), torch.cat([targets, eos])


class SpanCorruptionTask:
    """Span corruption on runs of `train`, validated on fixed runs of `val`."""

    variable_shapes = False

    def __init__(self, shape: ModelShape, train: TokenFile, val: TokenFile | None, seed: int, batch_size: int,
                 eval_batches: int, top_sentinel_id: int, eos_id: int):
        self.shape, self.train, self.val, self.seed = shape, train, val, seed
        self.batch_size, self.eval_batches = batch_size, eval_batches
        self.top_sentinel_id, self.eos_id = top_sentinel_id, eos_id
        self.raw_length, self.target_len = span_corruption_lengths(shape.seq_len, shape.noise_density,
                                                                   shape.mean_span_length)
        self.examples = len(train) / self.raw_length
        self._validation: list[Batch] | None = None

    def objective(self, model: nn.Module) -> nn.Module:
        return Seq2SeqObjective(model)

    def corrupted(self, tokens: TokenFile, offsets: torch.Tensor, seed: int) -> Batch:
        """Examples starting at `offsets`, corrupted by masks drawn from `seed` (one mask per offset, in order)."""
        generator = torch.Generator().manual_seed(seed)
        masks = [noise_mask(self.raw_length, self.shape.noise_density, self.shape.mean_span_length, generator)
                 for _ in range(len(offsets))]
        rows = [torch.from_numpy(np.asarray(tokens.tokens[o : o + self.raw_length], dtype=np.int64))
                for o in offsets.tolist()]
        pairs = [corrupt(row, mask, self.top_sentinel_id, self.eos_id) for row, mask in zip(rows, masks)]
        inputs = torch.stack([p[0] for p in pairs]) if pairs else torch.zeros(0, self.shape.seq_len, dtype=torch.long)
        targets = torch.stack([p[1] for p in pairs]) if pairs else torch.zeros(0, self.target_len, dtype=torch.long)
        return {"inputs": inputs, "decoder_inputs": decoder_inputs(targets, self.eos_id), "targets": targets}

    def train_batch(self, step: int, rows: range, micro_batch_size: int) -> StepBatch:
        offsets = step_offsets(self.seed, step, self.batch_size, len(self.train), self.raw_length)
        batch = self.corrupted(self.train, offsets, mask_seed(self.seed, step))  # the global batch's examples
        mine = {name: value[rows.start : rows.stop] for name, value in batch.items()}
        return StepBatch(micro_batches(mine, micro_batch_size), self.batch_size * self.target_len,
                         self.batch_size * self.shape.seq_len)

    def validation_batches(self) -> list[Batch]:
        if self._validation is None:
            self._validation = []
            if self.val is not None:
                offsets = validation_offsets(self.seed, self.eval_batches * self.batch_size, len(self.val),
                                             self.raw_length)
                chunk = max(1, EVAL_LOGITS // (self.target_len * self.shape.vocab_size))
                self._validation = micro_batches(self.corrupted(self.val, offsets, mask_seed(self.seed, -1)), chunk)
        return self._validation

    def final_batches(self) -> list[Batch] | None:
        return None

    def validation_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        return {"val_loss": float(totals["loss"]) / max(1.0, float(totals["count"]))}
