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
            # Axes named twice (a cache's batch and the ids' batch) are merged; the message says only that.
            warnings.filterwarnings("ignore", message=".*will not be used, since it shares the same shape constraints")
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


PAST_INPUTS = ("input_ids", "position_ids", "attention_mask", "past_keys", "past_values")
PAST_OUTPUTS = ("logits", "present_keys", "present_values")


class DecoderWithPast(torch.nn.Module):
    """The graph onnxruntime decodes with, token by token, without recomputing the past.

    input_ids (B, T) int64, position_ids (B, T) int64, attention_mask (B, P + T) int64 (1 real token, 0 left
    padding), past_keys/past_values (L, B, K, P, E) float32 -> logits (B, T, V), present_keys/present_values
    (L, B, K, P + T, E). One stacked tensor per cache side instead of 2·L inputs keeps the feeds simple.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.shape = model.shape

    def forward(self, input_ids, position_ids, attention_mask, past_keys, past_values):
        from llmrecipe.generate.cache import GrowingState

        past = list(zip(past_keys.unbind(0), past_values.unbind(0)))
        state = GrowingState(past, position_ids, attention_mask.bool())
        logits = self.model(input_ids, cache=state)  # (B, T, V)
        keys = torch.stack([k for k, _ in state.present])  # (L, B, K, P + T, E)
        values = torch.stack([v for _, v in state.present])
        return logits, keys, values


def decoder_inputs(shape, batch: int, seq: int, past: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random feeds for DecoderWithPast: no padding, positions continuing the past."""
    generator = torch.Generator().manual_seed(seed)
    cache = (shape.n_layer, batch, shape.n_kv_head, past, shape.head_dim)
    return {
        "input_ids": torch.randint(0, shape.vocab_size, (batch, seq), generator=generator),
        "position_ids": torch.arange(past, past + seq).repeat(batch, 1),
        "attention_mask": torch.ones(batch, past + seq, dtype=torch.long),
        "past_keys": torch.randn(cache, generator=generator),
        "past_values": torch.randn(cache, generator=generator),
    }


def export_decoder(model: torch.nn.Module, path: Path, opset: int) -> list[Path]:
    """Write the decoder with past key/values (see DecoderWithPast) to `path`; returns every file written."""
    shape = model.shape
    # Lengths of 2 or more everywhere: an example of length 1 (or 0) would freeze that axis (PITFALLS.md).
    example = decoder_inputs(shape, batch=2, seq=3, past=4)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=shape.seq_len)
    past = torch.export.Dim("past", min=0, max=shape.seq_len)
    dynamic_shapes = {
        "input_ids": {0: batch, 1: seq},
        "position_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: torch.export.Dim.AUTO},  # past + seq: derived, and named so by the exporter
        "past_keys": {1: batch, 3: past},
        "past_values": {1: batch, 3: past},
    }
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    before = set(path.parent.iterdir())
    with quiet_exporter():
        torch.onnx.export(
            DecoderWithPast(model).eval(),
            tuple(example[name] for name in PAST_INPUTS),
            str(path),
            input_names=list(PAST_INPUTS),
            output_names=list(PAST_OUTPUTS),
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=weight_bytes > INLINE_WEIGHTS_LIMIT,
            verbose=False,
        )
    name_mask_axis(path)
    return sorted(set(path.parent.iterdir()) - before)


def name_mask_axis(path: Path) -> None:
    """The exporter cannot name a derived axis it was given as AUTO: call the mask's length what it is."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)  # weights stay where they are
    (mask,) = [i for i in proto.graph.input if i.name == "attention_mask"]
    mask.type.tensor_type.shape.dim[1].dim_param = "past + seq"
    onnx.save(proto, str(path))
