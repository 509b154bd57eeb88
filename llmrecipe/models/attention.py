"""Causal self-attention for training, choosing the faster of two exact formulations for the situation.

SDPA's fused (flash) kernel is the default. Under bf16 autocast on a CPU its backward pass is slow for short
sequences: measured with torch 2.13 on a 2-core AVX512-BF16/AMX CPU (B·H·T·E = 8·6·256·64, forward + backward)
the explicit matmul -> softmax -> matmul takes 32 ms against flash's 49 ms, 11 ms against 47 ms at T = 64, and
they tie at T = 512, above which flash wins (and the explicit form's (T, T) scores grow quadratically). In fp32
flash is faster at every length measured. Both compute the same softmax attention.
Shapes: B batch, H heads, T time, E head_dim.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EXPLICIT_MAX_LEN = 256
"""Longest sequence for which bf16 training on a CPU takes the explicit formulation (see above)."""


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """Causal attention of q (B, H, T, E) over k, v (B, K, T, E) -> (B, H, T, E). With K < H (grouped-query
    attention) each key/value head serves H/K consecutive query heads; SDPA reads them without copies."""
    grouped = k.size(1) != q.size(1)
    # The length is read last: exporters trace with a symbolic length and no autocast, and must not branch on it.
    if dropout == 0.0 and _cpu_bf16_training(q) and q.size(-2) <= EXPLICIT_MAX_LEN:
        if grouped:
            k, v = (t.repeat_interleave(q.size(1) // k.size(1), dim=1) for t in (k, v))  # (B, H, T, E)
        return _explicit(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, enable_gqa=grouped)


def _cpu_bf16_training(q: torch.Tensor) -> bool:
    return (
        q.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")
        and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def _explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    T = q.size(-2)
    scores = torch.matmul(q * q.size(-1) ** -0.5, k.transpose(-2, -1))  # (B, H, T, T); scaling q is the cheaper side
    # Added rather than masked_fill'ed: an addition passes the gradient through untouched, a fill must zero it.
    future = torch.full((T, T), float("-inf"), dtype=scores.dtype, device=q.device).triu_(1)  # (T, T): keys after the query
    return torch.matmul((scores + future).softmax(-1), v)  # (B, H, T, E)
