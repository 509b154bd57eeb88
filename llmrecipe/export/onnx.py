"""A trained decoder as an ONNX graph `input_ids (batch, seq) int64 -> logits (batch, seq, vocab) float32`,
and a check that onnxruntime computes the same logits as torch.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

INLINE_WEIGHTS_LIMIT = 1 << 30
"""Weights up to 1 GiB go inside the .onnx file (one self-contained file); ONNX's protobuf tops out at 2 GiB,
so bigger models keep their weights in an external data file next to it."""

CHECK_SHAPES = ((1, 2), (3, 5), (2, None))
"""(batch, seq) fed to both runtimes by `max_logit_difference`; None means the model's full seq_len."""


def export_onnx(model: torch.nn.Module, path: Path, opset: int) -> list[Path]:
    """Write `model` (in eval mode, on CPU) to `path`; returns every file written (the graph, maybe its weights)."""
    seq_len = model.shape.seq_len
    # A length-1 example silently freezes the seq axis at 1 (see PITFALLS.md): export with two tokens or more.
    example = torch.zeros(2, min(seq_len, 8), dtype=torch.long)  # (B, T)
    dynamic_shapes = {"idx": {0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=seq_len)}}
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    before = set(path.parent.iterdir())
    with quiet_exporter():
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["input_ids"],
            output_names=["logits"],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=weight_bytes > INLINE_WEIGHTS_LIMIT,
            verbose=False,
        )
    return sorted(set(path.parent.iterdir()) - before)


@contextlib.contextmanager
def quiet_exporter():
    """Silence the exporter's chatter that says nothing about our model: one warning per torchvision op it
    skips because torchvision is absent, and deprecation notices from torch's own pytree code."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning)
            yield
    finally:
        registration.setLevel(level)


def onnx_providers() -> list[str]:
    """CUDA when onnxruntime lists it and a GPU is really there, then CPU.

    onnxruntime-gpu lists CUDA even on machines without a GPU or CUDA libraries; asking for it there prints
    a loading error before falling back, so a GPU is confirmed through torch first.
    """
    import onnxruntime  # heavy, and only the export step needs it

    available = onnxruntime.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if torch.cuda.is_available() else []
    return [p for p in [*wanted, "CPUExecutionProvider"] if p in available]


@torch.no_grad()
def max_logit_difference(model: torch.nn.Module, path: Path, seed: int = 0) -> float:
    """Largest |onnxruntime logit - torch eager logit| over random inputs of several batch sizes and lengths."""
    import onnxruntime  # heavy, and only the export step needs it

    session = onnxruntime.InferenceSession(str(path), providers=onnx_providers())
    shape = model.shape
    generator = torch.Generator().manual_seed(seed)
    largest = 0.0
    for batch, seq in CHECK_SHAPES:
        length = min(seq or shape.seq_len, shape.seq_len)
        input_ids = torch.randint(0, shape.vocab_size, (batch, length), generator=generator)  # (B, T)
        expected = model(input_ids).float().numpy()  # (B, T, V)
        (actual,) = session.run(["logits"], {"input_ids": input_ids.numpy()})  # (B, T, V)
        largest = max(largest, float(np.abs(actual - expected).max()))
    return largest
