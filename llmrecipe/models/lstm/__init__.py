"""The LSTM family (Hochreiter & Schmidhuber, 1997): a recurrent baseline trained by the same trainer."""

from __future__ import annotations

from llmrecipe.models.family import Family
from llmrecipe.models.shape import ModelShape


class LSTM(Family):
    name = "lstm"
    module_path = "llmrecipe.models.lstm.model:LSTM"
    attention = False
    hidden_states = False  # one fused recurrent module: no blocks to stop after
    fsdp_unit = None  # one fused recurrent module: the whole model is one FSDP unit

    def parameter_count(self, shape: ModelShape) -> int:
        d = shape.d_model
        # Per layer: input-to-hidden and hidden-to-hidden matrices for 4 gates, each with a bias (PyTorch keeps two).
        return self.embedding_parameters(shape) + shape.n_layer * (4 * d * d + 4 * d * d + 8 * d)


FAMILY = LSTM()
