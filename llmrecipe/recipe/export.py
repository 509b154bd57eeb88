"""The `export` step: a trained model in a format other runtimes load."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmrecipe.recipe.base import Section, StepName


class ExportStep(Section):
    """Export a trained model and check the exported file against torch."""

    kind: Literal["export"]
    model: StepName
    """The `pretrain`, `import` or `finetune` step whose weights are exported."""
    format: Literal["onnx", "hf"] = "onnx"
    """`onnx`: model.onnx with past key/values as inputs and outputs (onnxruntime decodes token by token), checked
    for logits and greedy tokens. `hf`: the Hugging Face layout (config.json, model.safetensors, tokenizer files,
    generation_config.json) that `transformers.AutoModelForCausalLM.from_pretrained` loads, checked for logits."""
    opset: int = Field(default=23, ge=17)
    """ONNX opset version (format `onnx`). 23 has attention and RMS normalization as single operators, so
    onnxruntime runs fewer of them per token (needs onnxruntime 1.23 or later); 17 to 22 spell them out."""
    quantize: Literal["int8"] | None = None
    """Format `onnx`: also write model.int8.onnx with int8 dynamic quantization (onnxruntime), reporting its size
    and the perplexity change on text the fp32 model writes."""
    tolerance: float = Field(default=1e-4, gt=0)
    """Largest allowed |logit difference| between onnxruntime and torch; a bigger one fails the step."""

    @model_validator(mode="after")
    def _quantize_only_onnx(self) -> "ExportStep":
        if self.quantize is not None and self.format != "onnx":
            raise ValueError(f"quantize = '{self.quantize}' applies to format = 'onnx' only; remove it or export ONNX")
        return self
