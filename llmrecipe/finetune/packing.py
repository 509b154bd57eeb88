"""Sequence packing: several examples per training row, each blind to the others.

Each example keeps its own next-token shift (its last token predicts nothing in the next example), its own
positions (counted from 0), and a block-diagonal causal mask: a token attends only to earlier tokens of the
same example. So an example's logits are those it gets alone in a row (tests/test_finetune.py checks this).
The models take positions and a mask through their `cache` argument, the protocol of cached decoding
(llmrecipe/generate/cache.py): `PackedRows` is a cache with no past. On that path the models apply no attention
dropout (and `gpt2` no embedding dropout): packed SFT trains with the residual dropout only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmrecipe.finetune.chat_data import Example
from llmrecipe.training.batches import IGNORE

PADDING = -1
"""Example index of the unused tail of a row."""


@dataclass
class Packed:
    """N packed rows of T positions."""

    inputs: torch.Tensor  # (N, T) token ids
    targets: torch.Tensor  # (N, T) next token where it is an assistant token, else IGNORE
    positions: torch.Tensor  # (N, T) position within the token's own example
    documents: torch.Tensor  # (N, T) which example of the row the token belongs to; PADDING for the tail
    truncated: int
    """Examples longer than a row, cut at the end."""

    def __len__(self) -> int:
        return self.inputs.size(0)


def pack(examples: list[Example], seq_len: int) -> Packed:
    """First fit in the given order: an example goes in the current row if it fits, else it starts the next row."""
    rows: list[list[tuple[list[int], list[int]]]] = [[]]
    used, truncated = 0, 0
    for example in examples:
        ids, targets = example.ids[: seq_len + 1], example.targets[: seq_len + 1]
        truncated += len(example.ids) > seq_len + 1
        if len(ids) < 2:
            continue  # nothing to predict
        x = ids[:-1]
        y = [token if target else IGNORE for token, target in zip(ids[1:], targets[1:])]
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
        truncated=truncated,
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
    """Positions and the block-diagonal causal mask of a batch of packed rows, handed to `model(idx, cache=...)`."""

    def __init__(self, positions: torch.Tensor, documents: torch.Tensor):
        self.positions = positions  # (B, T)
        T = documents.size(1)
        causal = torch.ones(T, T, dtype=torch.bool, device=documents.device).tril()  # (T, T)
        same = documents[:, :, None] == documents[:, None, :]  # (B, T, T); padding attends to padding
        self.mask = (same & causal)[:, None]  # (B, 1, T, T), True = attend; the diagonal is always True

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """No past: the keys and values are this batch's own."""
        return k, v


def rows(packed: Packed, index: torch.Tensor, device: str) -> tuple[torch.Tensor, torch.Tensor, PackedRows]:
    """Inputs (B, T), targets (B, T) and the attention layout of the rows at `index`."""
    layout = PackedRows(packed.positions[index].to(device), packed.documents[index].to(device))
    return packed.inputs[index].to(device), packed.targets[index].to(device), layout
