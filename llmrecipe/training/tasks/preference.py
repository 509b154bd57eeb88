"""Preference tuning on pairs of answers to one prompt: DPO, IPO or SimPO (training/tasks/preference_loss.py).

A pair is two sequences, the prompt with the chosen answer and the prompt with the rejected one, each with its
answer's tokens as targets. A batch holds whole pairs, `(B, 2, T)`, right-padded to the micro-batch's longest
sequence: a decoder never looks right, so padding does not change a sequence's log-probabilities. The policy's
log-probability of an answer is the sum over its target tokens; DPO and IPO compare it with the reference's,
computed once before training by `reference_log_probs` (for LoRA, the same model with its adapters off) and carried
in the batches, so no second model is held while training.

Validation scores the held-out pairs and a fixed sample of train pairs alike: the loss, the reward accuracy (the
share of pairs whose chosen answer gets the higher reward; a tie counts half, so the starting model of DPO, whose
rewards are all zero, scores 0.5), the reward margin and the mean log-probabilities of chosen and rejected answers.
A step's pairs are consecutive slices of a per-epoch permutation of (seed, epoch), so the data cursor of a resumed
run is its step number.
"""

from __future__ import annotations

import contextlib
from typing import Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from llmrecipe.models.lora import adapters_disabled
from llmrecipe.training.loss import IGNORE
from llmrecipe.training.task import Batch, StepBatch, epoch_order
from llmrecipe.training.tasks.packed import Example, shifted
from llmrecipe.training.tasks.preference_loss import Method, pair_losses

TRAIN, HELD_OUT = 0, 1
"""Where a scored pair comes from: the columns of the objective's per-split statistics."""
STATISTICS = ("wins", "margin", "chosen_logp", "rejected_logp")
"""Per-split sums of the objective from which validation_metrics reads the reward metrics."""


class EncodedPair(Protocol):
    chosen: Example
    rejected: Example


class PairRows:
    """Pairs as next-token inputs and targets (IGNORE outside the answers), with their reference log-probabilities
    `(N, 2)` once known (zeros until then, and for SimPO, which has none)."""

    def __init__(self, pairs: Sequence[EncodedPair]):
        self.sequences = [shifted(example) for pair in pairs for example in (pair.chosen, pair.rejected)]  # 2N
        self.reference = torch.zeros(len(pairs), 2)

    def __len__(self) -> int:
        return len(self.sequences) // 2

    def length(self, pair: int) -> int:
        return max(len(self.sequences[2 * pair][0]), len(self.sequences[2 * pair + 1][0]))

    def tokens(self, index: Sequence[int]) -> int:
        return sum(len(self.sequences[2 * i + side][0]) for i in index for side in (0, 1))

    def batch(self, index: Sequence[int], split: int = TRAIN) -> Batch:
        """Pairs `index` as inputs and targets (b, 2, T), right-padded; their reference log-probabilities (b, 2);
        and where they come from (b,)."""
        sequences = [self.sequences[2 * i + side] for i in index for side in (0, 1)]  # chosen, rejected, ...
        T = max(len(x) for x, _ in sequences)
        inputs = torch.zeros(len(sequences), T, dtype=torch.long)
        targets = torch.full((len(sequences), T), IGNORE, dtype=torch.long)
        for row, (x, y) in enumerate(sequences):
            inputs[row, : len(x)], targets[row, : len(y)] = torch.tensor(x), torch.tensor(y)
        b = len(index)
        return {"inputs": inputs.view(b, 2, T), "targets": targets.view(b, 2, T),
                "reference": self.reference[list(index)], "split": torch.full((b,), split, dtype=torch.long)}


def answer_log_probs(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, T, V) logits and (N, T) targets -> each sequence's summed log-probability of its targets (N,), in fp32,
    and its target count (N,)."""
    N, T = targets.shape
    token_nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                                reduction="none")  # (N T,): 0 where ignored
    return -token_nll.view(N, T).sum(dim=-1), (targets != IGNORE).sum(dim=-1)


class PreferenceObjective(nn.Module):
    """The loss summed over a batch's pairs, with their count, and the reward statistics per split (train, held
    out), each of shape (2,)."""

    def __init__(self, model: nn.Module, method: Method, beta: float, gamma: float):
        super().__init__()
        self.model, self.method, self.beta, self.gamma = model, method, beta, gamma

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, reference: torch.Tensor,
                split: torch.Tensor) -> dict[str, torch.Tensor]:
        B, _, T = inputs.shape
        logits = self.model(inputs.reshape(2 * B, T))  # (2B, T, V)
        logps, lengths = answer_log_probs(logits, targets.reshape(2 * B, T))  # (2B,) each
        logps, lengths = logps.view(B, 2), lengths.view(B, 2)
        out = pair_losses(self.method, logps, reference.float(), lengths, self.beta, self.gamma)
        margins = out.chosen_rewards - out.rejected_rewards  # (B,)
        wins = (margins > 0).float() + 0.5 * (margins == 0).float()
        where = F.one_hot(split, 2).float()  # (B, 2): a pair's split as a column
        return {"loss": out.losses.sum(), "count": where.sum(),
                "pairs": where.sum(dim=0), "pair_loss": where.T @ out.losses.detach(), "wins": where.T @ wins,
                "margin": where.T @ margins.detach(), "chosen_logp": where.T @ logps[:, 0].detach(),
                "rejected_logp": where.T @ logps[:, 1].detach()}


class PreferenceTask:
    variable_shapes = True  # each micro-batch is as long as its longest sequence

    def __init__(self, train: PairRows, val: PairRows | None, method: Method, beta: float, gamma: float, seed: int,
                 batch_size: int, eval_batches: int, micro_batch_size: int):
        self.train, self.val, self.method, self.beta, self.gamma = train, val, method, beta, gamma
        self.seed, self.batch_size = seed, batch_size
        self.eval_batches, self.micro_batch_size = eval_batches, micro_batch_size
        self.examples = len(train)
        self._orders: dict[int, torch.Tensor] = {}

    def objective(self, model: nn.Module) -> nn.Module:
        return PreferenceObjective(model, self.method, self.beta, self.gamma)

    def train_batch(self, step: int, rows: range, micro_batch_size: int) -> StepBatch:
        index = epoch_order(self.seed, step, self.batch_size, len(self.train), self._orders).tolist()
        mine = index[rows.start : rows.stop]
        pieces = [self.train.batch(mine[i : i + micro_batch_size]) for i in range(0, len(mine), micro_batch_size)]
        return StepBatch(pieces, float(len(index)), self.train.tokens(index))

    def validation_batches(self) -> list[Batch]:
        """The first `eval_batches` batches of held-out pairs and as many train pairs, grouped by length (less
        padding); none without held-out pairs."""
        if self.val is None or not len(self.val):
            return []
        batches = []
        for rows, split in ((self.val, HELD_OUT), (self.train, TRAIN)):
            count = min(len(rows), self.eval_batches * self.batch_size)
            order = sorted(range(count), key=rows.length)
            step = self.micro_batch_size
            batches += [rows.batch(order[i : i + step], split) for i in range(0, count, step)]
        return batches

    def final_batches(self) -> None:
        return None

    def validation_metrics(self, totals: dict[str, torch.Tensor]) -> dict[str, float]:
        pairs = totals["pairs"].clamp(min=1.0)  # (2,)
        metrics = {"val_loss": float(totals["pair_loss"][HELD_OUT] / pairs[HELD_OUT])}
        for split, prefix in ((HELD_OUT, "val"), (TRAIN, "train")):
            means = {name: float(totals[name][split] / pairs[split]) for name in STATISTICS}
            metrics.update({f"{prefix}_reward_accuracy": means["wins"], f"{prefix}_reward_margin": means["margin"],
                            f"{prefix}_chosen_logp": means["chosen_logp"],
                            f"{prefix}_rejected_logp": means["rejected_logp"]})
        return metrics


@torch.no_grad()
def reference_log_probs(model: nn.Module, rows: PairRows, micro_batch_size: int, device: str,
                        autocast: contextlib.AbstractContextManager) -> torch.Tensor:
    """The starting model's summed log-probabilities of every pair's answers, (N, 2) on the CPU: `model` with its
    LoRA adapters off (a model without adapters as it is), in eval mode, under `autocast` (the training precision)."""
    was_training = model.training
    model.eval()
    out = torch.zeros(len(rows), 2)
    order = sorted(range(len(rows)), key=rows.length)  # similar lengths together: less padding
    with adapters_disabled(model), autocast:
        for start in range(0, len(order), micro_batch_size):
            index = order[start : start + micro_batch_size]
            batch = rows.batch(index)
            inputs, targets = batch["inputs"].to(device), batch["targets"].to(device)
            b, _, T = inputs.shape
            logits = model(inputs.view(2 * b, T))  # (2b, T, V)
            out[index] = answer_log_probs(logits, targets.view(2 * b, T))[0].view(b, 2).cpu()
    model.train(was_training)
    return out
