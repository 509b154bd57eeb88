"""The BERT family (Devlin et al., 2019): a bidirectional encoder trained by masked-language modelling."""

from __future__ import annotations

from llmrecipe.models.gpt2 import GPT2
from llmrecipe.models.shape import ModelShape


class Bert(GPT2):
    """GPT-2's blocks without the causal mask, and an output bias."""

    name = "bert"
    module_path = "llmrecipe.models.bert.model:Bert"
    objective = "masked_lm"
    causal = False
    decodes = False
    hf_architecture = None

    def parameter_count(self, shape: ModelShape) -> int:
        return super().parameter_count(shape) + shape.vocab_size  # the output layer's bias


FAMILY = Bert()
