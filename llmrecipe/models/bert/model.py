"""BERT-style encoder (Devlin et al., 2019) trained by masked-language modelling.

Our own layout: the blocks are GPT-2's without the causal mask, so every position sees the whole window. Pre-norm
(as in most encoders since 2020) trains stably without BERT's warmup tricks. The output layer predicts the
original token at every position; the trainer scores only the masked ones.

With `shape.post_norm`, the original BERT layout of imported checkpoints: embeddings (token + position + token
type 0) normalised, blocks that normalise after each residual sum, exact GELU, and an output transform (dense,
GELU, LayerNorm) before the vocabulary projection. Without `shape.lm_head` the model returns its hidden states.
Shapes: B batch, T time (sequence), D d_model, V vocab.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmrecipe.models.attention import AttentionLayout
from llmrecipe.models.gpt2.model import MLP, Attention, Block
from llmrecipe.models.shape import ModelShape


class PostNormBlock(nn.Module):
    """The original BERT block: x = ln_1(x + attn(x)), then x = ln_2(x + mlp(x))."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.attn = Attention(shape, causal=False)
        self.ln_1 = nn.LayerNorm(shape.d_model, eps=shape.norm_eps)
        self.mlp = MLP(shape, approximate="none")
        self.ln_2 = nn.LayerNorm(shape.d_model, eps=shape.norm_eps)
        self.dropout = nn.Dropout(shape.dropout)

    def forward(self, x: torch.Tensor, layout: AttentionLayout | None = None, layer: int = 0) -> torch.Tensor:
        x = self.ln_1(x + self.dropout(self.attn(x, layout, layer)))
        return self.ln_2(x + self.dropout(self.mlp(x)))


class MaskedLMHead(nn.Module):
    """BERT's output: dense, GELU, LayerNorm, then the vocabulary projection (weight tied to the embedding)."""

    def __init__(self, shape: ModelShape):
        super().__init__()
        self.transform = nn.Linear(shape.d_model, shape.d_model)
        self.norm = nn.LayerNorm(shape.d_model, eps=shape.norm_eps)
        self.decoder = nn.Linear(shape.d_model, shape.vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.transform(x))))  # (B, T, V)


class Bert(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        self.activation_checkpointing = False
        """Set by the trainer: recompute each block in the backward pass instead of keeping its activations."""
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.positions = nn.Embedding(shape.seq_len, shape.d_model)
        self.drop = nn.Dropout(shape.dropout)
        if shape.post_norm:
            self.token_types = nn.Embedding(shape.type_vocab_size, shape.d_model)
            self.embed_norm = nn.LayerNorm(shape.d_model, eps=shape.norm_eps)
            self.blocks = nn.ModuleList(PostNormBlock(shape) for _ in range(shape.n_layer))
            self.lm_head = MaskedLMHead(shape) if shape.lm_head else nn.Identity()
        else:
            self.blocks = nn.ModuleList(Block(shape, causal=False) for _ in range(shape.n_layer))
            self.norm = nn.LayerNorm(shape.d_model, eps=shape.norm_eps)
            self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=True)  # BERT's decoder keeps a bias
        self.reset_parameters()
        self.tie_weights()

    def output_projection(self) -> nn.Module | None:
        """The linear layer that maps states to vocabulary logits, if the model has one."""
        if isinstance(self.lm_head, MaskedLMHead):
            return self.lm_head.decoder
        return self.lm_head if isinstance(self.lm_head, nn.Linear) else None

    def tie_weights(self) -> None:
        output = self.output_projection()
        if self.shape.tie_embeddings and output is not None:
            output.weight = self.embed.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, 0.02) weights, zero biases; residual output projections scaled by 1/sqrt(2·layers)."""
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:
            for proj in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * self.shape.n_layer))

    def forward(self, idx: torch.Tensor, layout: AttentionLayout | None = None) -> torch.Tensor:
        """Token ids with some replaced by the mask token (B, T) -> logits of the original tokens (B, T, V), or the
        hidden states (B, T, D) of a model without an output layer. A `layout` (rows padded on the right,
        models/attention.py: PaddedRows) keeps padding out of attention."""
        positions = torch.arange(idx.size(1), device=idx.device) if layout is None else layout.positions  # (T,) | (B, T)
        x = self.embed(idx) + self.positions(positions)  # (B, T, D)
        if self.shape.post_norm:
            x = self.embed_norm(x + self.token_types.weight[0])  # every token is of type 0 (segment A)
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, layout, layer, use_reentrant=False)
            else:
                x = block(x, layout, layer)
        return self.lm_head(x if self.shape.post_norm else self.norm(x))  # (B, T, V)
