"""The objective of encoder-decoder models: cross-entropy of the decoder's predictions of its targets given the
encoded input. Shared by span-corruption pre-training and text-to-text fine-tuning."""

from __future__ import annotations

import torch
from torch import nn

from llmrecipe.training.loss import IGNORE, cross_entropy_sum


def decoder_inputs(targets: torch.Tensor, start_id: int) -> torch.Tensor:
    """Targets (B, T) shifted right behind the start token (teacher forcing); IGNORE positions become the start id
    (they sit after the real targets, where the causal decoder never reads them)."""
    shifted = torch.cat([torch.full_like(targets[:, :1], start_id), targets[:, :-1]], dim=1)
    return torch.where(shifted == IGNORE, start_id, shifted)


class Seq2SeqObjective(nn.Module):
    """Summed cross-entropy at the decoder's target positions (IGNORE elsewhere), the input padded where
    `input_mask` (B, S) is False."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, decoder_inputs: torch.Tensor, targets: torch.Tensor,
                input_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        logits = self.model(inputs, decoder_inputs, input_mask)  # (B, T, V)
        return {"loss": cross_entropy_sum(logits, targets), "count": (targets != IGNORE).sum()}
