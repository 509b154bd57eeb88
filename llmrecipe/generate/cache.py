"""What a cached forward pass reads and writes: earlier keys/values, positions and the attention mask.

Prompts of different lengths are left-padded to one batch. The cache holds one slot per token (padding
included); `valid` marks the slots that hold real tokens, and each token's rotary position counts only
the real tokens before it, so a padded row computes what it would alone.

Both states are attention layouts (models/attention.py): each attention layer hands them its new keys and values
and gets the attention output. Two ways to keep keys and values:
- KVCache + InPlaceState (torch decoding): buffers for the whole context allocated once, each step writing
  its new slots in place; attention reads a view of the filled slots. Nothing is copied or reallocated per
  token, which matters at batch 1, where a step's matmuls are small.
- GrowingState (the exported ONNX graph): past tensors in, past + new concatenated out, as a graph with
  plain inputs and outputs needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from llmrecipe.models.attention import masked_attention

LayerCache = tuple[torch.Tensor, torch.Tensor]
"""Keys and values of one layer, each (B, K, P, E): batch, key/value heads, past slots, head size."""


class DecodeState(ABC):
    """What both ways share: the positions and mask of this step's tokens, and attention over past + new slots."""

    positions: torch.Tensor
    """(B, T) rotary position of each new token."""
    mask: torch.Tensor | None
    """(B, 1, T, P + T) bool, True = attend; None when every query may see every filled slot."""

    @abstractmethod
    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> LayerCache:
        """This step's (B, K, T, E) keys/values -> all of the layer's keys/values so far, (B, K, P + T, E)."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k, v = self.extend(layer, k, v)  # (B, K, P + T, E)
        return masked_attention(q, k, v, self.mask)  # (B, H, T, E)


class GrowingState(DecodeState):
    """Past tensors given per layer; `present` collects past + new (a copy), as the ONNX graph returns it."""

    def __init__(self, past: list[LayerCache], positions: torch.Tensor, valid: torch.Tensor):
        self.past = past
        self.positions = positions  # (B, T)
        self.mask = attention_mask(valid, positions.size(1))  # (B, 1, T, P + T)
        self.present: list[LayerCache] = []

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> LayerCache:
        past_k, past_v = self.past[layer]
        k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, K, P + T, E)
        self.present.append((k, v))
        return k, v


class KVCache:
    """Keys and values of every layer, preallocated for the whole context: (L, B, K, S, E) each.

    Slots [0, length) hold the past. Allocated uninitialised: the pages of slots never reached are never
    touched, and attention only reads slots that a step has written.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int = 0):
        self.keys, self.values = keys, values  # (L, B, K, S, E) each
        self.length = length

    @classmethod
    def allocate(
        cls, layers: int, batch: int, heads: int, slots: int, head_dim: int, device, dtype=torch.float32
    ) -> KVCache:
        shape = (layers, batch, heads, slots, head_dim)
        return cls(torch.empty(shape, device=device, dtype=dtype), torch.empty(shape, device=device, dtype=dtype))

    @property
    def slots(self) -> int:
        return self.keys.size(3)

    def select(self, rows: torch.Tensor) -> KVCache:
        """A cache of only these batch rows (a copy: rows leave a batch rarely, once each)."""
        return KVCache(self.keys[:, rows], self.values[:, rows], self.length)


class InPlaceState(DecodeState):
    """Writes a step's keys/values into a KVCache at [length, length + T) and attends over a view of [0, length + T)."""

    def __init__(self, cache: KVCache, positions: torch.Tensor, valid: torch.Tensor):
        new = positions.size(1)
        if valid.size(1) != cache.length + new or cache.length + new > cache.slots:
            raise ValueError(
                f"valid covers {valid.size(1)} slots, but the cache holds {cache.length} of {cache.slots} "
                f"and {new} are new"
            )
        self.cache, self.start, self.end = cache, cache.length, cache.length + new
        self.positions = positions  # (B, T)
        self.mask = decode_mask(valid, new)

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> LayerCache:
        keys, values = self.cache.keys[layer], self.cache.values[layer]  # (B, K, S, E) views
        keys[:, :, self.start : self.end] = k
        values[:, :, self.start : self.end] = v
        return keys[:, :, : self.end], values[:, :, : self.end]  # (B, K, P + T, E) views, no copy

    def commit(self) -> None:
        """Called once every layer has written: the new slots become past."""
        self.cache.length = self.end


def decode_mask(valid: torch.Tensor, new: int) -> torch.Tensor | None:
    """The mask for InPlaceState: none at all for one new token with no padding (the usual batch-1 step)."""
    if new == 1:
        # A single real query at the last slot sees every real slot: no causal part, and it is never padding.
        return None if bool(valid.all()) else valid[:, None, None, :]  # (B, 1, 1, S)
    return attention_mask(valid, new)


def attention_mask(valid: torch.Tensor, new: int) -> torch.Tensor:
    """(B, S) real-token slots, the last `new` of them being queries -> (B, 1, new, S) bool, True = attend.

    A query sees real tokens at or before its slot. It always sees itself, so a padding query never has an
    all-masked row (softmax over nothing is NaN, and NaN in a padding slot would leak through 0 * NaN).
    """
    slots = valid.size(1)
    key = torch.arange(slots, device=valid.device)  # (S,)
    query = torch.arange(new, device=valid.device)[:, None] + (slots - new)  # (T, 1); not a slice of `key`, whose
    # length an exporter could not tell from T
    # Broadcasting rather than indexing with None: each None is one more operator in the exported graph.
    return ((key <= query) & valid[:, None, None, :]) | (key == query)  # (B, 1, T, S)


def left_pad(prompts: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prompts -> ids (B, T) int64 left-padded with 0, valid (B, T) bool, positions (B, T) int64 counting real
    tokens; numpy, as the engine's bookkeeping is (see decoders.py)."""
    width = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), width), dtype=np.int64)
    valid = np.zeros((len(prompts), width), dtype=bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        valid[row, width - len(prompt) :] = True
    positions = np.maximum(valid.cumsum(axis=1) - 1, 0)  # (B, T); padding sits at position 0
    return ids, valid, positions
