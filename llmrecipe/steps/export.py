"""Executor of `export`: the trained model for other runtimes, checked against torch before it is stored.

format "onnx": `model.onnx`, the decoder with past key/values as inputs and outputs (onnxruntime decodes
token by token), checked for logits and for greedy tokens. format "hf": the Hugging Face layout that
`transformers.AutoModelForCausalLM.from_pretrained` loads. Both keep the tokenizer and config beside. A classify
fine-tune exports its class logits instead (llmrecipe/export/classifier.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from llmrecipe.errors import StepError
from llmrecipe.export.onnx import export_decoder
from llmrecipe.export.parity import greedy_tokens, past_logit_difference
from llmrecipe.models.build import load_trained
from llmrecipe.models.classifier import is_classifier_artifact, load_classifier
from llmrecipe.models.registry import family
from llmrecipe.plan.specs import ExportSpec
from llmrecipe.run.context import StepContext


def export_onnx(model: torch.nn.Module, path: Path, opset: int) -> list[Path]:
    """The decoder with past key/values; returns every file written."""
    return export_decoder(model, path, opset)


def max_logit_difference(model: torch.nn.Module, path: Path) -> float:
    """Largest |onnxruntime - torch| over logits and caches, with and without a past."""
    return past_logit_difference(model, path)


def run(raw_spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    spec = ExportSpec.model_validate(raw_spec)
    model_dir = ctx.inputs["model"]
    if is_classifier_artifact(model_dir):  # a classify fine-tune: class logits, not a decoder
        from llmrecipe.export.classifier import export_classifier

        return export_classifier(load_classifier(model_dir, "cpu"), model_dir, ctx.out_dir, spec.format, spec.opset,
                                 spec.tolerance, ctx.log)
    # Exported on CPU whatever the training device: the graph is the same and CPU logits are the reference.
    model, _ = load_trained(model_dir, "cpu")
    if spec.format == "hf":
        from llmrecipe.export.hf import export_hf

        return export_hf(model, model_dir, ctx.out_dir, spec.tolerance, ctx.log)
    return ONNX_LAYOUTS[family(model.shape.arch).onnx_layout](model, model_dir, spec, ctx)


def _onnx(model: torch.nn.Module, model_dir: Path, spec: ExportSpec, ctx: StepContext) -> dict[str, Any]:
    written = export_onnx(model, ctx.out_dir / "model.onnx", spec.opset)
    difference = max_logit_difference(model, ctx.out_dir / "model.onnx")
    ctx.log(f"onnxruntime vs torch: max |logit difference| = {difference:.3g} (tolerance {spec.tolerance:g})")
    if not difference <= spec.tolerance:  # `not <=` also catches NaN
        raise StepError(
            f"the ONNX model's logits differ from torch's by up to {difference:.3g}, more than tolerance = "
            f"{spec.tolerance:g}; try another opset (e.g. 18 or 23), or raise tolerance if the difference is rounding"
        )
    expected, actual = greedy_tokens(model, ctx.out_dir / "model.onnx")
    if expected != actual:
        raise StepError(
            f"greedy decoding in onnxruntime gives other tokens than torch ({actual[0][:8]}... vs {expected[0][:8]}...) "
            "although the logits agree within tolerance; lower tolerance or try another opset"
        )
    copy_beside(model_dir, ctx.out_dir)
    metrics = {"max_abs_diff": difference, "onnx_bytes": sum(path.stat().st_size for path in written),
               "opset": spec.opset, "greedy_tokens_match": True}
    if spec.quantize == "int8":
        from llmrecipe.export.quantize import quantize_int8

        metrics |= quantize_int8(model, ctx.out_dir / "model.onnx", ctx.out_dir / "model.int8.onnx", ctx.log)
    return metrics


def _onnx_seq2seq(model: torch.nn.Module, model_dir: Path, spec: ExportSpec, ctx: StepContext) -> dict[str, Any]:
    """An encoder-decoder's three graphs, checked for logits and greedy tokens through the decoding engine."""
    from llmrecipe.export.onnx_seq2seq import export_seq2seq, seq2seq_parity

    if spec.quantize is not None:
        raise StepError(f"quantize = '{spec.quantize}' is for decoder-only graphs; remove it to export this "
                        f"`{model.shape.arch}` encoder-decoder")
    written = export_seq2seq(model, ctx.out_dir, spec.opset)
    difference, same_tokens = seq2seq_parity(model, ctx.out_dir)
    ctx.log(f"onnxruntime vs torch: max |logit difference| = {difference:.3g} (tolerance {spec.tolerance:g}), "
            f"greedy tokens {'equal' if same_tokens else 'differ'}")
    if not difference <= spec.tolerance or not same_tokens:
        raise StepError(f"the ONNX graphs' logits differ from torch's by up to {difference:.3g} (tolerance = "
                        f"{spec.tolerance:g}), greedy tokens {'equal' if same_tokens else 'differ'}; try another "
                        "opset (e.g. 18 or 23), or raise tolerance if the difference is rounding")
    copy_beside(model_dir, ctx.out_dir)
    return {"max_abs_diff": difference, "onnx_bytes": sum(path.stat().st_size for path in written),
            "opset": spec.opset, "greedy_tokens_match": True}


def copy_beside(model_dir: Path, out_dir: Path) -> None:
    """The tokenizer and config next to the graphs; a fine-tuned chat model keeps its format."""
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(model_dir / name, out_dir / name)
    for name in ("chat_template.jinja", "tokenizer_config.json"):
        if (model_dir / name).is_file():
            shutil.copy(model_dir / name, out_dir / name)


ONNX_LAYOUTS = {"decoder": _onnx, "seq2seq": _onnx_seq2seq}
"""The exporter of each family's ONNX layout (models/family.py: onnx_layout)."""
