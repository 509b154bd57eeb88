"""LLaMA-style decoder: RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention; optionally q/k/v biases
(Qwen2), per-head q/k RMSNorm (Qwen3) and Llama 3's rotary frequency scaling.

Reads top to bottom: RMSNorm -> rotary tables -> Attention -> MLP -> Block -> Llama; the norm's and the
rotation's arithmetic is in models/pointwise.py. One forward serves training, packed documents and cached
decoding: an `AttentionLayout` (models/attention.py) changes only where tokens sit and what they attend to.
Shapes: B batch, T time (sequence), D d_model, H query heads, K key/value heads, E head_dim, V vocab.
Rotary embeddings use the "rotate half" layout of Hugging Face's LlamaForCausalLM, so exported
weights need no permutation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmrecipe.models.attention import AttentionLayout, causal_attention
from llmrecipe.models.pointwise import rms_norm, rotary
from llmrecipe.models.shape import ModelShape, RopeScaling


class RMSNorm(nn.Module):
    """Root-mean-square norm (Zhang & Sennrich, 2019): LayerNorm without centering or bias."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


def rotary_tables(seq_len: int, head_dim: int, theta: float,
                  scaling: RopeScaling | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and signed sin tables, (T, E), for rotary position embeddings (Su et al., 2021) in the rotate-half
    layout: pair (x[i], x[i + E/2]) turns by angle i, so the sin of the first half carries the minus sign.
    Made on the CPU whatever the default device: a model built on the meta device (to load a checkpoint into)
    still needs these real tables."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device="cpu") / head_dim))  # (E/2,)
    if scaling is not None:
        inv_freq = llama3_frequencies(inv_freq, scaling)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device="cpu"), inv_freq)  # (T, E/2)
    return torch.cat([angles.cos(), angles.cos()], dim=-1), torch.cat([-angles.sin(), angles.sin()], dim=-1)


def llama3_frequencies(inv_freq: torch.Tensor, scaling: RopeScaling) -> torch.Tensor:
    """Llama 3's long-context scaling: wavelengths longer than original_context / low_freq_factor are slowed by
    `factor`, those shorter than original_context / high_freq_factor kept, and those between interpolated."""
    original = scaling.original_max_position_embeddings
    wavelength = 2 * math.pi / inv_freq  # (E/2,)
    slowed = torch.where(wavelength > original / scaling.low_freq_factor, inv_freq / scaling.factor, inv_freq)
    smooth = (original / wavelength - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    blended = (1 - smooth) * slowed / scaling.factor + smooth * slowed
    medium = (wavelength >= original / scaling.high_freq_factor) & (wavelength <= original / scaling.low_freq_factor)
    return torch.where(medium, blended, slowed)


class Attention(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = shape.n_head, shape.n_kv_head, shape.head_dim
        q_dim, kv_dim = shape.n_head * shape.head_dim, shape.n_kv_head * shape.head_dim  # q_dim may differ from D
        self.q_proj = nn.Linear(shape.d_model, q_dim, bias=shape.qkv_bias)
        self.k_proj = nn.Linear(shape.d_model, kv_dim, bias=shape.qkv_bias)
        self.v_proj = nn.Linear(shape.d_model, kv_dim, bias=shape.qkv_bias)
        self.o_proj = nn.Linear(q_dim, shape.d_model, bias=False)
        if shape.qk_norm:  # Qwen3: each head's queries and keys normalised before the rotation
            self.q_norm, self.k_norm = RMSNorm(shape.head_dim, shape.norm_eps), RMSNorm(shape.head_dim, shape.norm_eps)
        self.qk_norm = shape.qk_norm
        self.dropout = shape.dropout

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, layout: AttentionLayout | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, E)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, K, E)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, H, T, E), (B, K, T, E)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, K, T, E)
        q, k = rotary(q, cos, signed_sin), rotary(k, cos, signed_sin)
        if layout is None:  # grouped-query attention (K < H): each key/value head serves H/K query heads
            y = causal_attention(q, k, v, self.dropout if self.training else 0.0)  # (B, H, T, E)
        else:
            y = layout.attend(layer, q, k, v)  # (B, H, T, E)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    """SwiGLU (Shazeer, 2020): down(silu(gate(x)) * up(x))."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.gate_proj = nn.Linear(shape.d_model, shape.ffn_hidden, bias=False)
        self.up_proj = nn.Linear(shape.d_model, shape.ffn_hidden, bias=False)
        self.down_proj = nn.Linear(shape.ffn_hidden, shape.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.attn_norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.attn = Attention(shape)
        self.mlp_norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.mlp = MLP(shape)
        self.dropout = nn.Dropout(shape.dropout)

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor, layout: AttentionLayout | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.attn_norm(x), cos, signed_sin, layout, layer))
        return x + self.dropout(self.mlp(self.mlp_norm(x)))


class Llama(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        self.activation_checkpointing = False
        """Set by the trainer: recompute each block in the backward pass instead of keeping its activations."""
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layer))
        self.norm = RMSNorm(shape.d_model, shape.norm_eps)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        cos, signed_sin = rotary_tables(shape.seq_len, shape.head_dim, shape.rope_theta, shape.rope_scaling)
        # Not saved with the weights: they are a function of the shape.
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_signed_sin", signed_sin, persistent=False)
        self.reset_parameters()
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.shape.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, 0.02) everywhere; residual output projections scaled by 1/sqrt(2·layers) (GPT-2)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.o_proj, block.mlp.down_proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.shape.n_layer))

    def forward(self, idx: torch.Tensor, layout: AttentionLayout | None = None, last_only: bool = False) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V), or only the last position's (B, V) with `last_only`.

        With a `layout` (cached decoding, packed documents) each token's rotary position comes from
        `layout.positions` (B, T) and attention from the layout.
        """
        T = idx.size(1)
        if layout is None:
            cos, signed_sin = self.rope_cos[:T], self.rope_signed_sin[:T]  # (T, E)
        else:  # F.embedding: one Gather of the table in an exported graph
            cos = F.embedding(layout.positions, self.rope_cos)[:, None]  # (B, 1, T, E)
            signed_sin = F.embedding(layout.positions, self.rope_signed_sin)[:, None]
        if torch.is_autocast_enabled(idx.device.type):  # rotate in the precision q and k arrive in, as HF does:
            dtype = torch.get_autocast_dtype(idx.device.type)  # fp32 tables would promote the rotation and
            cos, signed_sin = cos.to(dtype), signed_sin.to(dtype)  # the attention inputs to fp32: twice the traffic
        x = self.embed(idx)  # (B, T, D)
        for layer, block in enumerate(self.blocks):
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, cos, signed_sin, layout, layer, use_reentrant=False)
            else:
                x = block(x, cos, signed_sin, layout, layer)
        if last_only:
            x = x[:, -1]  # (B, D): decoding needs only the next token's logits
        return self.lm_head(self.norm(x))  # (B, T, V) or (B, V)
