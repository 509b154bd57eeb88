"""Executor of `export`: the trained model as `model.onnx`, checked against torch, beside its tokenizer and config."""

from __future__ import annotations

import shutil
from typing import Any

from llmrecipe.errors import StepError
from llmrecipe.export.onnx import export_onnx, max_logit_difference
from llmrecipe.models import load_trained
from llmrecipe.plan.specs import ExportSpec
from llmrecipe.run.context import StepContext


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = ExportSpec.model_validate(raw_spec)
    model_dir = ctx.inputs["model"]
    # Exported on CPU whatever the training device: the graph is the same and CPU logits are the reference.
    model, _ = load_trained(model_dir, "cpu")
    written = export_onnx(model, ctx.out_dir / "model.onnx", spec.opset)
    difference = max_logit_difference(model, ctx.out_dir / "model.onnx")
    ctx.log(f"onnxruntime vs torch: max |logit difference| = {difference:.3g} (tolerance {spec.tolerance:g})")
    if not difference <= spec.tolerance:  # `not <=` also catches NaN
        raise StepError(
            f"the ONNX model's logits differ from torch's by up to {difference:.3g}, more than tolerance = "
            f"{spec.tolerance:g}; try another opset (e.g. 18 or 23), or raise tolerance if the difference is rounding"
        )
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(model_dir / name, ctx.out_dir / name)
    return {"max_abs_diff": difference, "onnx_bytes": sum(path.stat().st_size for path in written), "opset": spec.opset}
