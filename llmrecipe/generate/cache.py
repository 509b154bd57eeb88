"""What a cached forward pass reads and writes: earlier keys/values, positions and the attention mask.

Prompts of different lengths are left-padded to one batch. The cache holds one slot per token (padding
included); `valid` marks the slots that hold real tokens, and each token's rotary position counts only
the real tokens before it, so a padded row computes what it would alone.
"""

from __future__ import annotations

import torch

LayerCache = tuple[torch.Tensor, torch.Tensor]
"""Keys and values of one layer, each (B, K, P, E): batch, key/value heads, past slots, head size."""


class DecodeState:
    """Handed to `model(idx, cache=...)`: each attention layer appends its new keys/values via `extend`."""

    def __init__(self, past: list[LayerCache], positions: torch.Tensor, valid: torch.Tensor):
        self.past = past
        self.positions = positions  # (B, T) rotary position of each new token
        self.mask = attention_mask(valid, positions.size(1))  # (B, 1, T, P + T)
        self.present: list[LayerCache] = []

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> LayerCache:
        past_k, past_v = self.past[layer]
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, K, P + T, E)
        self.present.append((k, v))
        return k, v


def attention_mask(valid: torch.Tensor, new: int) -> torch.Tensor:
    """(B, S) real-token slots, the last `new` of them being queries -> (B, 1, new, S) bool, True = attend.

    A query sees real tokens at or before its slot. It always sees itself, so a padding query never has an
    all-masked row (softmax over nothing is NaN, and NaN in a padding slot would leak through 0 * NaN).
    """
    slots = valid.size(1)
    key = torch.arange(slots, device=valid.device)  # (S,)
    query = torch.arange(new, device=valid.device) + (slots - new)  # (T,); not a slice of `key`, whose length
    # an exporter could not tell from T
    causal = key[None, :] <= query[:, None]  # (T, S)
    itself = key[None, :] == query[:, None]  # (T, S)
    return ((causal[None] & valid[:, None, :]) | itself[None])[:, None]  # (B, 1, T, S)


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts -> ids (B, T) left-padded with 0, valid (B, T) bool, positions (B, T) counting real tokens."""
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        valid[row, width - len(prompt) :] = True
    positions = (valid.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T); padding sits at position 0
    return ids, valid, positions
