"""Checks that an exported decoder computes what the torch model computes: logits, caches and greedy tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from llmrecipe.export.onnx import (
    DecoderWithPast,
    decoder_input_names,
    decoder_inputs,
    decoder_output_names,
    onnx_providers,
)

PAST_CHECKS = ((1, 2, 0), (3, 5, 4), (2, 1, 7), (2, None, 0))
"""(batch, new tokens, past) fed to both runtimes; None is the model's whole context."""
GREEDY_PROMPTS = ([5, 3, 9], [1, 2, 3, 4, 5, 6, 7], [11])
"""Prompts of different lengths, decoded as one left-padded batch."""


@torch.no_grad()
def past_logit_difference(model: torch.nn.Module, path: Path) -> float:
    """Largest |onnxruntime - torch| over logits and present caches, with and without a past and padding."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=onnx_providers())
    module = DecoderWithPast(model).eval()
    largest = 0.0
    for seed, (batch, seq, past) in enumerate(PAST_CHECKS):
        seq = seq or model.shape.seq_len
        feeds = decoder_inputs(model.shape, batch, seq, past, seed)
        if past >= 2:
            feeds["attention_mask"][0, :2] = 0  # a left-padded first row
        expected = module(*(feeds[name] for name in decoder_input_names(model.shape.n_layer)))
        actual = session.run(decoder_output_names(model.shape.n_layer), {n: t.numpy() for n, t in feeds.items()})
        for want, got in zip(expected, actual):
            largest = max(largest, float(np.abs(got - want.numpy()).max()))
    return largest


def greedy_tokens(model: torch.nn.Module, path: Path, new_tokens: int = 16) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy continuations of GREEDY_PROMPTS by our torch engine and by onnxruntime, token by token."""
    from llmrecipe.generate.decoders import OnnxDecoder, TorchDecoder
    from llmrecipe.generate.engine import Engine
    from llmrecipe.generate.sampling import SamplingParams

    params = SamplingParams(max_tokens=new_tokens, temperature=0.0)
    prompts = [[i % model.shape.vocab_size for i in p] for p in GREEDY_PROMPTS]
    runs = []
    for decoder in (TorchDecoder(model), OnnxDecoder(path, model.shape)):
        runs.append([c.token_ids for c in Engine(decoder).generate(prompts, params)])
    return runs[0], runs[1]
