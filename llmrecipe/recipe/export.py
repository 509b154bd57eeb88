"""The `export` step: a trained model in a format other runtimes load."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmrecipe.recipe.base import Section, StepName


class ExportStep(Section):
    """Export a trained model and check the exported file against torch."""

    kind: Literal["export"]
    model: StepName
    """The `pretrain` step whose weights are exported."""
    format: Literal["onnx"] = "onnx"
    opset: int = Field(default=18, ge=17)
    """ONNX opset version."""
    tolerance: float = Field(default=1e-4, gt=0)
    """Largest allowed |logit difference| between onnxruntime and torch; a bigger one fails the step."""
