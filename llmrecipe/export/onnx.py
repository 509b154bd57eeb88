"""A trained decoder as an ONNX graph `input_ids (batch, seq) int64 -> logits (batch, seq, vocab) float32`,
and a check that onnxruntime computes the same logits as torch; and the decoder with a KV cache
(`export_decoder`), one past/present tensor per layer and side, traced from the lean decoding step.
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


IDS_INPUTS = ("input_ids", "position_ids", "attention_mask")


def past_names(n_layer: int) -> list[str]:
    """The cache inputs, key then value per layer, named as Hugging Face Optimum names them."""
    return [f"past_key_values.{layer}.{side}" for layer in range(n_layer) for side in ("key", "value")]


def present_names(n_layer: int) -> list[str]:
    return [f"present.{layer}.{side}" for layer in range(n_layer) for side in ("key", "value")]


def decoder_input_names(n_layer: int) -> list[str]:
    return [*IDS_INPUTS, *past_names(n_layer)]


def decoder_output_names(n_layer: int) -> list[str]:
    return ["logits", *present_names(n_layer)]


class DecoderWithPast(torch.nn.Module):
    """The graph onnxruntime decodes with, token by token, without recomputing the past.

    input_ids (B, T) int64, position_ids (B, T) int64, attention_mask (B, P + T) int64 (1 real token, 0 left
    padding), past_key_values.{i}.key/.value (B, K, P, E) float32 per layer -> logits (B, T, V),
    present.{i}.key/.value (B, K, P + T, E). One input and output per layer and side (not one stacked tensor):
    onnxruntime then neither splits nor stacks the cache every token (measured: session.run ~13% faster).

    It traces the model's own forward with a growing cache (generate/cache.py); logits stay at every position, which
    costs nothing at one new token and serves the parity and perplexity checks.
    """

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.shape = model.shape

    def forward(self, input_ids, position_ids, attention_mask, *past):
        from llmrecipe.generate.cache import GrowingState

        layers = list(zip(past[0::2], past[1::2]))
        state = GrowingState(layers, position_ids, attention_mask.bool())
        logits = self.model(input_ids, state)  # (B, T, V)
        return logits, *(t for layer in state.present for t in layer)


def empty_past(shape, batch: int) -> dict[str, np.ndarray]:
    """Feeds for a decoder with no past yet: (B, K, 0, E) per layer and side."""
    nothing = np.zeros((batch, shape.n_kv_head, 0, shape.head_dim), dtype=np.float32)
    return {name: nothing for name in past_names(shape.n_layer)}


def decoder_inputs(shape, batch: int, seq: int, past: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random feeds for DecoderWithPast: no padding, positions continuing the past."""
    generator = torch.Generator().manual_seed(seed)
    cache = (batch, shape.n_kv_head, past, shape.head_dim)
    return {
        "input_ids": torch.randint(0, shape.vocab_size, (batch, seq), generator=generator),
        "position_ids": torch.arange(past, past + seq).repeat(batch, 1),
        "attention_mask": torch.ones(batch, past + seq, dtype=torch.long),
        **{name: torch.randn(cache, generator=generator) for name in past_names(shape.n_layer)},
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
        "past": tuple({0: batch, 2: past} for _ in past_names(shape.n_layer)),  # forward's *past
    }
    # At most twice the model's bytes: a tied embedding may be written as its table and as the output projection.
    weight_bytes = 2 * sum(p.numel() * p.element_size() for p in model.parameters())
    before = set(path.parent.iterdir())
    with quiet_exporter():
        torch.onnx.export(
            DecoderWithPast(model).eval(),
            tuple(example[name] for name in decoder_input_names(shape.n_layer)),
            str(path),
            input_names=decoder_input_names(shape.n_layer),
            output_names=decoder_output_names(shape.n_layer),
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
