"""BERT-style encoder (Devlin et al., 2019) trained by masked-language modelling.

The blocks are GPT-2's without the causal mask: every position sees the whole window. Pre-norm (as in
most encoders since 2020) trains stably without BERT's warmup tricks. The output layer predicts the
original token at every position; the trainer scores only the masked ones.
Shapes: B batch, T time (sequence), D d_model, V vocab.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from llmrecipe.models.attention import AttentionLayout
from llmrecipe.models.gpt2.model import Block
from llmrecipe.models.shape import ModelShape


class Bert(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        self.activation_checkpointing = False
        """Set by the trainer: recompute each block in the backward pass instead of keeping its activations."""
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.positions = nn.Embedding(shape.seq_len, shape.d_model)
        self.drop = nn.Dropout(shape.dropout)
        self.blocks = nn.ModuleList(Block(shape, causal=False) for _ in range(shape.n_layer))
        self.norm = nn.LayerNorm(shape.d_model, eps=shape.norm_eps)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=True)  # BERT's decoder keeps a bias
        self.reset_parameters()
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.shape.tie_embeddings:
            self.lm_head.weight = self.embed.weight

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
        """Token ids with some replaced by the mask token (B, T) -> logits of the original tokens (B, T, V). A
        `layout` (rows padded on the right, models/attention.py: PaddedRows) keeps padding out of attention."""
        positions = torch.arange(idx.size(1), device=idx.device) if layout is None else layout.positions  # (T,) | (B, T)
        x = self.drop(self.embed(idx) + self.positions(positions))  # (B, T, D)
        for layer, block in enumerate(self.blocks):
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, layout, layer, use_reentrant=False)
            else:
                x = block(x, layout, layer)
        return self.lm_head(self.norm(x))  # (B, T, V)
