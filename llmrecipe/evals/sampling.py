"""Plain autoregressive sampling: the whole (cropped) context is run again for every new token.

Quadratic in the output length, which is fine for a handful of short samples in an evaluation; a
cached decoding engine is what serving uses.
"""

from __future__ import annotations

import torch

GREEDY_BELOW = 1e-5
"""Temperatures under this are treated as greedy: dividing logits by them overflows to inf and NaN."""


@torch.no_grad()
def sample(
    model: torch.nn.Module,
    prompt_ids: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    generator: torch.Generator,
    *,
    eot_id: int | None = None,
    vocab_size: int | None = None,
) -> list[int]:
    """Continue `prompt_ids` by up to `max_new_tokens` ids; stop after `eot_id` (which is kept in the result).

    Returns only the new ids. temperature 0 is greedy; `top_k` keeps the k likeliest ids (None: all).
    `vocab_size` is the tokenizer's vocabulary: the model's padded rows past it are never sampled.
    `generator` must live on the model's device.
    """
    device = next(model.parameters()).device
    seq_len = model.shape.seq_len
    context = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    new_ids: list[int] = []
    for _ in range(max_new_tokens):
        logits = model(context[:, -seq_len:])[0, -1].float()  # (V,): the prediction after the last token
        if vocab_size is not None:
            logits = logits[:vocab_size]
        next_id = pick_token(logits, temperature, top_k, generator)
        new_ids.append(next_id)
        if next_id == eot_id:
            break
        context = torch.cat([context, context.new_tensor([[next_id]])], dim=1)  # (1, T + 1)
    return new_ids


def pick_token(logits: torch.Tensor, temperature: float, top_k: int | None, generator: torch.Generator) -> int:
    """One id from next-token logits (V,): the argmax when greedy, else a draw from the tempered top-k."""
    if temperature < GREEDY_BELOW:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None and top_k < logits.numel():
        kth_largest = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (V,)
    return int(torch.multinomial(probs, 1, generator=generator))
