"""int8 dynamic quantization of an exported decoder, and what it costs: file size and perplexity.

Weights of MatMuls become int8 (activations are quantized on the fly), as onnxruntime's
`quantize_dynamic` does. The perplexity change is measured on text the fp32 model samples itself, so no
held-out data is needed at export time: both graphs score the same sequences.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

SAMPLES = 4
"""Sequences sampled by the fp32 model (temperature 1) for the perplexity comparison."""


def quantize_int8(model: torch.nn.Module, fp32_path: Path, int8_path: Path, log: Callable[[str], None]) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.disable(logging.WARNING)  # it advises "pre-processing" on the root logger, aimed at static quantization
    try:
        # Weight matmuls only: left to itself it also turns opset 23's Attention into a QAttention that
        # onnxruntime then rejects (unknown attribute is_causal), and attention has no weights to shrink.
        quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
    finally:
        logging.disable(logging.NOTSET)
    sequences = sampled_sequences(model)
    fp32_ppl, int8_ppl = perplexity(fp32_path, sequences, model.shape), perplexity(int8_path, sequences, model.shape)
    sizes = fp32_path.stat().st_size, int8_path.stat().st_size
    log(f"int8: {sizes[1]:,} bytes (fp32 {sizes[0]:,}); perplexity on the model's own samples "
        f"{int8_ppl:.4g} (fp32 {fp32_ppl:.4g})")
    return {"int8_onnx_bytes": sizes[1], "fp32_sample_ppl": fp32_ppl, "int8_sample_ppl": int8_ppl,
            "int8_ppl_change": int8_ppl / fp32_ppl - 1}


def sampled_sequences(model: torch.nn.Module) -> np.ndarray:
    """(SAMPLES, seq_len) token ids the model writes from one-token prompts, seeded."""
    from llmrecipe.generate.decoders import TorchDecoder
    from llmrecipe.generate.engine import Engine
    from llmrecipe.generate.sampling import SamplingParams

    length = model.shape.seq_len
    engine = Engine(TorchDecoder(model))
    params = [SamplingParams(max_tokens=length - 1, temperature=1.0, seed=seed) for seed in range(SAMPLES)]
    completions = engine.generate([[seed % model.shape.vocab_size] for seed in range(SAMPLES)], params)
    return np.array([[seed % model.shape.vocab_size] + c.token_ids for seed, c in enumerate(completions)])


def perplexity(path: Path, sequences: np.ndarray, shape) -> float:
    """exp(mean next-token loss) of an exported decoder over whole sequences (no past)."""
    import onnxruntime

    from llmrecipe.export.onnx import empty_past, onnx_providers

    session = onnxruntime.InferenceSession(str(path), providers=onnx_providers())
    batch, length = sequences.shape
    feeds = {"input_ids": sequences, "position_ids": np.tile(np.arange(length), (batch, 1)),
             "attention_mask": np.ones_like(sequences), **empty_past(shape, batch)}
    (logits,) = session.run(["logits"], feeds)  # (B, T, V)
    log_probs = torch.log_softmax(torch.from_numpy(logits[:, :-1]).double(), dim=-1)  # (B, T - 1, V)
    targets = torch.from_numpy(sequences[:, 1:])
    nats = -log_probs.gather(-1, targets[..., None]).mean()
    return math.exp(float(nats))
