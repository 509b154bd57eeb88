"""An encoder-decoder as ONNX graphs in the layout Optimum uses for seq2seq models:

- `encoder_model.onnx`: input_ids, attention_mask (batch, encoder_sequence) -> last_hidden_state;
- `decoder_model.onnx`, the first decoding step: input_ids (batch, decoder_sequence), encoder_attention_mask,
  encoder_hidden_states -> logits, and per layer `present.{i}.decoder.key/value` (its self-attention cache) and
  `present.{i}.encoder.key/value` (the cross-attention keys and values, computed here once per input);
- `decoder_with_past_model.onnx`, every later step: one new input_id per row, encoder_attention_mask and the
  `past_key_values.{i}.decoder/encoder.key/value` -> logits and the grown `present.{i}.decoder.key/value`.

Caches are (batch, heads, positions, head_dim).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from llmrecipe.export.onnx import INLINE_WEIGHTS_LIMIT, quiet_exporter

ENCODER, DECODER, DECODER_WITH_PAST = "encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx"


def cache_names(prefix: str, layers: int, sides: tuple[str, ...]) -> list[str]:
    """`{prefix}.{i}.{side}.key/value` for every layer, in the graphs' order."""
    return [f"{prefix}.{i}.{side}.{kind}" for i in range(layers) for side in sides for kind in ("key", "value")]


class EncoderGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.encode(input_ids, attention_mask.bool())  # (B, S, D)


class DecoderGraph(nn.Module):
    """The first decoding step: cross-attention keys and values from the encoder output, then the decoder."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from llmrecipe.models.t5.model import DecoderCache

        cross = self.model.cross_keys_values(encoder_hidden_states)
        cache = DecoderCache(cross, encoder_attention_mask.bool())
        logits = self.model.decode(input_ids, cache)  # (B, T, V)
        return (logits, *[t for self_kv, cross_kv in zip(cache.layers, cross) for t in (*self_kv, *cross_kv)])


class DecoderWithPastGraph(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, encoder_attention_mask: torch.Tensor,
                past: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        from llmrecipe.models.t5.model import DecoderCache

        layers = [(past[4 * i], past[4 * i + 1]) for i in range(len(past) // 4)]
        cross = [(past[4 * i + 2], past[4 * i + 3]) for i in range(len(past) // 4)]
        cache = DecoderCache(cross, encoder_attention_mask.bool())
        cache.layers = layers
        logits = self.model.decode(input_ids, cache)  # (B, 1, V)
        return (logits, *[t for kv in cache.layers for t in kv])


def export_seq2seq(model: nn.Module, out_dir: Path, opset: int) -> list[Path]:
    """Write the three graphs of `model` (in eval mode, on CPU) into `out_dir`; returns the files written."""
    shape = model.shape
    layers = shape.n_decoder_layer
    Dim = torch.export.Dim
    batch, source = Dim("batch"), Dim("encoder_sequence", max=shape.seq_len)
    target, past_len = Dim("decoder_sequence"), Dim("past_decoder_sequence")
    # Lengths of 2 or more in the examples: a length-1 example freezes its axis at 1.
    ids = torch.zeros(2, 5, dtype=torch.long)
    mask = torch.ones(2, 5, dtype=torch.long)
    with torch.no_grad():
        memory = model.encode(ids, mask.bool())
        first = DecoderGraph(model)(torch.zeros(2, 3, dtype=torch.long), mask, memory)[1:]
    graphs = [
        (EncoderGraph(model), (ids, mask), ["input_ids", "attention_mask"], ["last_hidden_state"],
         {"input_ids": {0: batch, 1: source}, "attention_mask": {0: batch, 1: source}}, ENCODER),
        (DecoderGraph(model), (torch.zeros(2, 3, dtype=torch.long), mask, memory),
         ["input_ids", "encoder_attention_mask", "encoder_hidden_states"],
         ["logits", *cache_names("present", layers, ("decoder", "encoder"))],
         {"input_ids": {0: batch, 1: target}, "encoder_attention_mask": {0: batch, 1: source},
          "encoder_hidden_states": {0: batch, 1: source}}, DECODER),
        (DecoderWithPastGraph(model), (torch.zeros(2, 1, dtype=torch.long), mask, list(first)),
         ["input_ids", "encoder_attention_mask", *cache_names("past_key_values", layers, ("decoder", "encoder"))],
         ["logits", *cache_names("present", layers, ("decoder",))],
         {"input_ids": {0: batch}, "encoder_attention_mask": {0: batch, 1: source},
          "past": [{0: batch, 2: past_len if j % 4 < 2 else source} for j in range(4 * layers)]}, DECODER_WITH_PAST),
    ]
    before = set(out_dir.iterdir())
    with quiet_exporter():
        for module, args, inputs, outputs, dynamic, name in graphs:
            weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
            torch.onnx.export(module.eval(), args, str(out_dir / name), input_names=inputs, output_names=outputs,
                              opset_version=opset, dynamo=True, dynamic_shapes=dynamic,
                              external_data=weight_bytes > INLINE_WEIGHTS_LIMIT, verbose=False)
    return sorted(set(out_dir.iterdir()) - before)


@torch.no_grad()
def seq2seq_parity(model: nn.Module, out_dir: Path, steps: int = 8, seed: int = 0) -> tuple[float, bool]:
    """(largest |onnxruntime - torch| logit difference, equal greedy tokens) over `steps` greedy decoding steps of
    a batch of random prompts of different lengths, decoded by the engine on both runtimes."""
    from llmrecipe.generate.decoders import OnnxEncoderDecoder, TorchEncoderDecoder
    from llmrecipe.generate.engine import Engine
    from llmrecipe.generate.sampling import SamplingParams

    generator = torch.Generator().manual_seed(seed)
    lengths = (3, model.shape.seq_len, 7)
    prompts = [torch.randint(0, model.shape.vocab_size, (n,), generator=generator).tolist() for n in lengths]
    recorded: dict[str, list] = {"torch": [], "onnx": []}
    tokens = {}
    for name, decoder in (("torch", TorchEncoderDecoder(model, 0)), ("onnx", OnnxEncoderDecoder(out_dir, model.shape, 0))):
        forward = decoder.forward

        def recording(*args, forward=forward, name=name):
            logits, past = forward(*args)
            recorded[name].append(logits)
            return logits, past

        decoder.forward = recording
        params = SamplingParams(max_tokens=steps, temperature=0.0)
        tokens[name] = [c.token_ids for c in Engine(decoder).generate(prompts, params)]
    difference = max(float(abs(a - b).max()) for a, b in zip(recorded["torch"], recorded["onnx"]))
    return difference, tokens["torch"] == tokens["onnx"]
