"""Sampling settings and the choice of one next token from a row of logits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

GREEDY_BELOW = 1e-5
"""Temperatures under this are greedy: dividing logits by them overflows to inf and NaN."""


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    """New tokens at most; generation also ends at the model's context length (finish reason `length`)."""
    temperature: float = 1.0
    """0 (or anything below GREEDY_BELOW) is greedy decoding."""
    top_k: int | None = None
    """Keep the k likeliest tokens (None: all)."""
    top_p: float = 1.0
    """Keep the smallest set of likeliest tokens whose probability reaches top_p (nucleus sampling)."""
    repetition_penalty: float = 1.0
    """> 1 makes tokens already in the prompt or output less likely (Keskar et al., 2019, CTRL)."""
    stop: tuple[str, ...] = ()
    """Text that ends the output when generated; the stop text itself is not returned."""
    seed: int | None = None
    """Same seed, same prompt, same settings -> same tokens. None draws a fresh seed."""

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW or self.top_k == 1


def next_token(logits: np.ndarray, params: SamplingParams, seen: torch.Tensor, generator: torch.Generator) -> int:
    """One id from next-token logits (V,) of the tokenizer's vocabulary; `seen` (N,) are the ids so far.

    Logits come as numpy and greedy decoding stays in numpy: its argmax also takes the first maximum, and at batch 1
    each torch call (or conversion) costs a visible share of a decoding step."""
    if params.greedy and params.repetition_penalty == 1.0:
        return int(logits.argmax())
    logits = penalize_repeats(torch.from_numpy(logits), seen, params.repetition_penalty)  # (V,)
    if params.greedy:
        return int(logits.argmax())
    logits = logits / params.temperature
    if params.top_k is not None and params.top_k < logits.numel():
        kth_largest = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (V,)
    if params.top_p < 1.0:
        probs = nucleus(probs, params.top_p)
    return int(torch.multinomial(probs, 1, generator=generator))


def penalize_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: a seen token's positive logit is divided by `penalty`, a negative one multiplied."""
    if penalty == 1.0 or seen.numel() == 0:
        return logits
    scores = logits[seen]
    logits = logits.clone()
    logits[seen] = torch.where(scores > 0, scores / penalty, scores * penalty)
    return logits


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail past cumulative probability `top_p`; the likeliest token always stays (top_p may round to 0)."""
    sorted_probs, order = probs.sort(descending=True)  # (V,)
    before = sorted_probs.cumsum(0) - sorted_probs  # probability mass of the likelier tokens
    keep = before < top_p
    keep[0] = True
    kept = torch.zeros_like(probs).scatter(0, order, sorted_probs * keep)
    return kept / kept.sum()
