"""Attention for every forward pass of the families: causal training, and the layouts that attend otherwise.

Causal training picks the faster of two exact formulations. SDPA's fused (flash) kernel is the default. Under
bf16 autocast on a CPU its backward pass is slow for short sequences: measured with torch 2.13 on a 2-core
AVX512-BF16/AMX CPU (B·H·T·E = 8·6·256·64, forward + backward) the explicit matmul -> softmax -> matmul takes 32 ms
against flash's 49 ms, 11 ms against 47 ms at T = 64, and they tie at T = 512, above which flash wins (and the
explicit form's (T, T) scores grow quadratically). In fp32 flash is faster at every length measured.

On CUDA, SDPA's fused kernels read grouped key/value heads in place (`enable_gqa`) only in FlashAttention, which
takes half precision and no mask; everything else falls back to the slow math kernel. So on CUDA grouped heads are
repeated whenever flash cannot run: the memory-efficient kernel then takes fp32 and masks.

A forward pass that is not plain causal training (cached decoding, packed documents) hands the model an
`AttentionLayout` that says where each token sits and how it attends.
Shapes: B batch, H query heads, K key/value heads, T time, P past slots, E head_dim.
"""

from __future__ import annotations

import functools
from typing import Protocol

import torch
import torch.nn.functional as F

EXPLICIT_MAX_LEN = 256
"""Longest sequence for which bf16 training on a CPU takes the explicit formulation (see above)."""


class AttentionLayout(Protocol):
    """How a forward pass attends when it is not plain causal training: a KV cache (generate/cache.py) or a batch
    of packed documents (training/tasks/packed.py)."""

    positions: torch.Tensor
    """(B, T) the position of each token: rotary angles, learned position rows."""

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """This layer's q (B, H, T, E), new k and v (B, K, T, E) -> attention output (B, H, T, E)."""
        ...


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout: float) -> torch.Tensor:
    """Causal attention of q (B, H, T, E) over k, v (B, K, T, E) -> (B, H, T, E). With K < H (grouped-query
    attention) each key/value head serves H/K consecutive query heads."""
    # The length is read last: exporters trace with a symbolic length and no autocast, and must not branch on it.
    if dropout == 0.0 and _cpu_bf16_training(q) and q.size(-2) <= EXPLICIT_MAX_LEN:
        k, v = repeat_heads(q, k), repeat_heads(q, v)  # (B, H, T, E)
        return _explicit(q, k, v)
    k, v, grouped = _for_kernel(q, k, v, masked=False)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True, enable_gqa=grouped)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """q (B, H, T, E) over k, v (B, K, S, E) where `mask` (broadcastable to (B, H, T, S), True = attend) allows;
    None: every query sees every key."""
    k, v, grouped = _for_kernel(q, k, v, masked=mask is not None)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=grouped)


def repeat_heads(q: torch.Tensor, kv: torch.Tensor) -> torch.Tensor:
    """(B, K, S, E) -> (B, H, S, E): each key/value head repeated for the H/K query heads it serves."""
    if kv.size(1) == q.size(1):
        return kv
    return kv.repeat_interleave(q.size(1) // kv.size(1), dim=1)


def _for_kernel(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, masked: bool):
    """(k, v, enable_gqa) for SDPA: grouped heads read in place where a fused kernel can, else repeated."""
    grouped = k.size(1) != q.size(1)
    if grouped and q.is_cuda and (masked or q.dtype not in (torch.float16, torch.bfloat16)):
        return repeat_heads(q, k), repeat_heads(q, v), False
    return k, v, grouped


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


def document_mask(documents: torch.Tensor) -> torch.Tensor:
    """documents (B, T), each token's document id -> (B, 1, T, T) bool, True = attend: a token sees the earlier
    tokens of its own document (and itself, so no row is empty)."""
    T = documents.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=documents.device).tril()  # (T, T)
    return ((documents[:, :, None] == documents[:, None, :]) & causal)[:, None]


def document_block_mask(documents: torch.Tensor):
    """The same rule as `document_mask`, as FlexAttention's block-sparse mask: fully masked blocks are skipped.
    Built eagerly even inside a compiled model: its vmap over blocks need not be traced."""
    return _eager_block_mask()(documents)


@functools.cache
def _eager_block_mask():
    # Applied on first use, not at import: torch.compiler.disable imports torch._dynamo, seconds that every model
    # load (generate, serve, export) would pay; only FlexAttention in a compiled model needs it.
    return torch.compiler.disable(_block_mask)


def _block_mask(documents: torch.Tensor):
    from torch.nn.attention.flex_attention import create_block_mask

    def same_document_causal(b, h, q, kv):
        return (documents[b, q] == documents[b, kv]) & (q >= kv)

    B, T = documents.shape
    return create_block_mask(same_document_causal, B, None, T, T, device=documents.device)


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    """FlexAttention (a fused Triton kernel under torch.compile) with a block mask; grouped heads read in place."""
    from torch.nn.attention.flex_attention import flex_attention as flex

    return flex(q, k, v, block_mask=block_mask, enable_gqa=k.size(1) != q.size(1))


class PaddedRows:
    """Rows padded on the right, for a bidirectional encoder: every token attends to the real tokens of its row only.
    (A causal decoder needs no layout for right padding: no real token looks right.)"""

    def __init__(self, lengths: torch.Tensor, width: int):
        # size(0), not len(): an exported graph keeps its batch axis free
        self.positions = torch.arange(width, device=lengths.device).expand(lengths.size(0), width)  # (B, T)
        self.mask = (self.positions < lengths[:, None])[:, None, None, :]  # (B, 1, 1, T) real keys

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return masked_attention(q, k, v, self.mask)
