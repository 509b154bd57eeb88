"""LSTM language model (Hochreiter & Schmidhuber, 1997; Zaremba et al., 2014): a recurrent baseline trained
by the same trainer on the same windows as the transformers, so the two can be compared on equal terms.

Shapes: B batch, T time (sequence), D d_model (embedding and hidden size), V vocab.
"""

from __future__ import annotations

import torch
from torch import nn

from llmrecipe.models.shape import ModelShape


class LSTM(nn.Module):
    def __init__(self, shape: ModelShape):
        super().__init__()
        self.shape = shape
        self.activation_checkpointing = False
        """Accepted for a uniform trainer; cuDNN/oneDNN's fused LSTM keeps its own activations."""
        self.embed = nn.Embedding(shape.vocab_size, shape.d_model)
        self.drop = nn.Dropout(shape.dropout)
        # Dropout between stacked layers (Zaremba et al.); PyTorch applies none after the last one.
        self.rnn = nn.LSTM(shape.d_model, shape.d_model, shape.n_layer, batch_first=True,
                           dropout=shape.dropout if shape.n_layer > 1 else 0.0)
        self.lm_head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        self.reset_parameters()
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.shape.tie_embeddings:  # Press & Wolf (2017): tying helps recurrent LMs too
            self.lm_head.weight = self.embed.weight

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """N(0, 0.02) embeddings; PyTorch's uniform LSTM init; forget-gate bias 1 (Jozefowicz et al., 2015)."""
        nn.init.normal_(self.embed.weight, mean=0.0, std=0.02)
        d = self.shape.d_model
        for name, param in self.rnn.named_parameters():
            if name.startswith("bias_ih"):
                param.zero_()
                param[d : 2 * d] = 1.0  # gate order is input, forget, cell, output
            elif name.startswith("bias_hh"):
                param.zero_()
        if not self.shape.tie_embeddings:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> next-token logits (B, T, V); every window starts from a zero state."""
        x = self.drop(self.embed(idx))  # (B, T, D)
        hidden, _ = self.rnn(x)  # (B, T, D)
        return self.lm_head(self.drop(hidden))  # (B, T, V)
