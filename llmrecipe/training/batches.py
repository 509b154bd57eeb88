"""Training windows drawn from a packed token file, as a pure function of (seed, step).

Because each step's windows depend only on the seed and the step number, the data cursor of a
resumed run is just the step it resumes at, and any number of processes can agree on the global batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llmrecipe.plan.specs import ModelShape


class TokenFile:
    def __init__(self, path: Path, dtype: str):
        self.tokens = np.memmap(path, dtype=np.dtype(dtype).newbyteorder("<"), mode="r") if path.stat().st_size else np.zeros(0, dtype)

    def __len__(self) -> int:
        return len(self.tokens)

    def windows(self, offsets: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, each (B, seq_len), for windows starting at `offsets`."""
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


IGNORE = -100
"""Target id that the loss skips (`F.cross_entropy(ignore_index=...)`): positions that are not predicted."""


def step_batch(tokens: TokenFile, offsets: torch.Tensor, shape: ModelShape, mask_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets (B, T) for the windows at `offsets`: next tokens for decoders, masked tokens for `bert`."""
    x, y = tokens.windows(offsets, shape.seq_len)  # (B, T) each
    if shape.arch != "bert":
        return x, y
    return mask_tokens(x, shape, torch.Generator().manual_seed(mask_seed))


def mask_tokens(x: torch.Tensor, shape: ModelShape, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption (Devlin et al., 2019): of the chosen positions 80% become the mask token, 10% a random
    token, 10% stay; the targets are the original tokens there and IGNORE elsewhere. x: (B, T)."""
    chosen = torch.rand(x.shape, generator=generator) < shape.mask_fraction  # (B, T)
    roll = torch.rand(x.shape, generator=generator)  # (B, T)
    random_ids = torch.randint(1, shape.mask_token_id, x.shape, generator=generator)  # real tokens only
    targets = torch.where(chosen, x, IGNORE)
    inputs = torch.where(chosen & (roll < 0.8), shape.mask_token_id, x)
    inputs = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_ids, inputs)
    return inputs, targets


def mask_seed(seed: int, step: int) -> int:
    """Seed of step `step`'s masks, apart from the stream that draws window offsets."""
    return (seed * 1_000_003 + step) * 2 + 1
