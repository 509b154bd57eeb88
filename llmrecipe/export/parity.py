"""Checks that an exported decoder computes what the torch model computes: logits, caches and greedy tokens, in the
portable graph and, where there is one (an opset-23 export), in the fused graph our onnxruntime engine builds from
it (generate/fused.py)."""

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
    past_names,
)

PAST_CHECKS = ((1, 2, 0), (3, 5, 4), (2, 1, 7), (2, None, 0))
"""(batch, new tokens, past) fed to both runtimes; None is the model's whole context."""
FUSED_CHECKS = ((1, 2, 0), (1, 5, 4), (3, 1, 6), (2, None, 0))
"""The same for the fused graph, within what GroupQueryAttention serves: no padding, and more than one new token
after a past only at batch 1."""
GREEDY_PROMPTS = ([5, 3, 9], [1, 2, 3, 4, 5, 6, 7], [11])
"""Prompts of different lengths, decoded as one left-padded batch."""


@torch.no_grad()
def past_logit_difference(model: torch.nn.Module, path: Path) -> float:
    """Largest |onnxruntime - torch| over logits and present caches, with and without a past and padding, in the
    portable graph and in the fused one where there is one."""
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
        largest = max(largest, _largest_difference(expected, actual))
    return max(largest, fused_logit_difference(model, path))


@torch.no_grad()
def fused_logit_difference(model: torch.nn.Module, path: Path) -> float:
    """Largest |fused graph - torch| over logits and the caches' filled slots (0 when the export has no fused graph),
    run as our onnxruntime engine runs it: a FusedCache written in place."""
    from llmrecipe.generate.decoders import OnnxDecoder
    from llmrecipe.generate.fused import FusedCache

    decoder = OnnxDecoder(path, model.shape)
    if decoder.fused_session is None:
        return 0.0
    module = DecoderWithPast(model).eval()
    largest = 0.0
    for seed, (batch, seq, past) in enumerate(FUSED_CHECKS):
        seq = seq or model.shape.seq_len
        feeds = decoder_inputs(model.shape, batch, seq, past, seed)
        expected = module(*(feeds[name] for name in decoder_input_names(model.shape.n_layer)))
        cache = FusedCache(decoder.fused_session, model.shape, batch, past + seq)
        for buffer, name in zip(cache.buffers, past_names(model.shape.n_layer)):
            buffer[:, :, :past] = feeds[name].numpy()
        cache.length = past
        logits = cache.run(feeds["input_ids"].numpy())  # (B, T, V)
        largest = max(largest, _largest_difference(expected, [logits, *cache.filled()]))
    return largest


def _largest_difference(expected: tuple[torch.Tensor, ...], actual: list[np.ndarray]) -> float:
    return max(float(np.abs(got - want.numpy()).max()) for want, got in zip(expected, actual))


def greedy_tokens(model: torch.nn.Module, path: Path, new_tokens: int = 16) -> tuple[list[list[int]], list[list[int]]]:
    """Greedy continuations of GREEDY_PROMPTS by our torch engine and by onnxruntime, token by token: as one padded
    batch (the portable graph), then each prompt alone (the fused graph, where there is one)."""
    from llmrecipe.generate.decoders import OnnxDecoder, TorchDecoder
    from llmrecipe.generate.engine import Engine
    from llmrecipe.generate.sampling import SamplingParams

    params = SamplingParams(max_tokens=new_tokens, temperature=0.0)
    prompts = [[i % model.shape.vocab_size for i in p] for p in GREEDY_PROMPTS]
    runs = []
    for decoder in (TorchDecoder(model), OnnxDecoder(path, model.shape)):
        engine = Engine(decoder)
        batched = [c.token_ids for c in engine.generate(prompts, params)]
        runs.append(batched + [engine.generate([prompt], params)[0].token_ids for prompt in prompts])
    return runs[0], runs[1]
