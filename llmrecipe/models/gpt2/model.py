"""GPT-2 style decoder (Radford et al., 2019): learned positions, LayerNorm, GELU MLP, biases, tied embeddings.

Reads top to bottom: Attention -> MLP -> Block -> GPT2.
Shapes: B batch, T time (sequence), D d_model, H heads, E head_dim, F ffn_hidden, V vocab.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmrecipe.models.attention import AttentionLayout, causal_attention
from llmrecipe.models.shape import ModelShape


class Attention(nn.Module):
    def __init__(self, shape: ModelShape, causal: bool):
        super().__init__()
        self.n_head, self.head_dim, self.causal = shape.n_head, shape.head_dim, causal
        self.qkv = nn.Linear(shape.d_model, 3 * shape.d_model)  # one matmul for q, k and v
        self.proj = nn.Linear(shape.d_model, shape.d_model)
        self.dropout = shape.dropout

    def forward(self, x: torch.Tensor, layout: AttentionLayout | None = None, layer: int = 0) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, E)
        dropout = self.dropout if self.training else 0.0
        if layout is not None:  # cached decoding or packed documents
            y = layout.attend(layer, q, k, v)  # (B, H, T, E)
        elif self.causal:
            y = causal_attention(q, k, v, dropout)  # (B, H, T, E)
        else:  # the bidirectional encoder (bert)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # (B, H, T, E)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    """D -> F -> D with GELU: the tanh approximation, as GPT-2; exact (`approximate = "none"`), as BERT."""

    def __init__(self, shape: ModelShape, approximate: str = "tanh"):
        super().__init__()
        self.fc = nn.Linear(shape.d_model, shape.ffn_hidden)
        self.proj = nn.Linear(shape.ffn_hidden, shape.d_model)
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate=self.approximate))


class Block(nn.Module):
    """Pre-norm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, shape: ModelShape, causal: bool = True):
        super().__init__()
        self.ln_1 = nn.LayerNorm(shape.d_model, eps=shape.norm_eps)
        self.attn = Attention(shape, causal)
        self.ln_2 = nn.LayerNorm(shape.d_model, eps=shape.norm_eps)
        self.mlp = MLP(shape)
        self.dropout = nn.Dropout(shape.dropout)

    def forward(self, x: torch.Tensor, layout: AttentionLayout | None = None, layer: int = 0) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.ln_1(x), layout, layer))
        return x + self.dropout(self.mlp(self.ln_2(x)))


class GPT2(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        self.activation_checkpointing = False
        """Set by the trainer: recompute each block in the backward pass instead of keeping its activations."""
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.positions = nn.Embedding(shape.seq_len, shape.d_model)
        self.drop = nn.Dropout(shape.dropout)
        self.blocks = nn.ModuleList(Block(shape) for _ in range(shape.n_layer))
        self.norm = nn.LayerNorm(shape.d_model, eps=shape.norm_eps)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        self.reset_parameters()
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.shape.tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, zero biases; residual output projections scaled by 1/sqrt(2·layers) (GPT-2)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.shape.n_layer))

    def forward(self, idx: torch.Tensor, layout: AttentionLayout | None = None, last_only: bool = False) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V), or only the last position's (B, V) with `last_only`.

        With a `layout` (cached decoding, packed documents) positions come from `layout.positions` (B, T) and
        attention from the layout.
        """
        positions = torch.arange(idx.size(1), device=idx.device) if layout is None else layout.positions  # (T,) | (B, T)
        x = self.drop(self.embed(idx) + self.positions(positions))  # (B, T, D)
        for layer, block in enumerate(self.blocks):
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, layout, layer, use_reentrant=False)
            else:
                x = block(x, layout, layer)
        if last_only:
            x = x[:, -1]  # (B, D): decoding needs only the next token's logits
        return self.lm_head(self.norm(x))  # (B, T, V) or (B, V)
