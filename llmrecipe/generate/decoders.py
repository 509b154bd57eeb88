"""One cached forward pass, on torch or onnxruntime, behind the same three methods.

`forward(ids (B, T), positions (B, T), valid (B, P + T), past) -> (last logits (B, V), present)`,
`empty(batch, slots)` for a cache with no past and room for `slots` tokens, and `select(past, rows)` to drop
finished rows from a batch. Arrays in and out are numpy (ids and positions int64, valid bool, logits float32):
the engine's bookkeeping between steps is numpy, and at batch 1 each torch conversion is a visible share of a
step on onnxruntime.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrecipe.generate.cache import InPlaceState, KVCache
from llmrecipe.generate.fused import FusedCache


def torch_decoder(model: torch.nn.Module, start_id: int | None) -> "TorchDecoder | TorchEncoderDecoder":
    """The decoder for a model on torch, by its family: an encoder-decoder's starts from `start_id` (end-of-text,
    as its seq2seq tasks trained it)."""
    from llmrecipe.models.registry import family

    if family(model.shape.arch).encoder_decoder:
        return TorchEncoderDecoder(model, start_id)
    return TorchDecoder(model)


class TorchDecoder:
    """The model's own forward with a KVCache written in place: `present` is `past` itself, grown."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        shape = model.shape
        self.seq_len, self.vocab_size = shape.seq_len, shape.vocab_size
        self.cache_shape = (shape.n_layer, shape.n_kv_head, shape.head_dim)
        weight = next(model.parameters())
        self.device, self.dtype = weight.device, weight.dtype

    def empty(self, batch: int, slots: int | None = None) -> KVCache:
        """A cache with room for `slots` tokens per row (default: the model's context)."""
        layers, heads, size = self.cache_shape
        return KVCache.allocate(layers, batch, heads, slots or self.seq_len, size, self.device, self.dtype)

    @torch.inference_mode()
    def forward(
        self, ids: np.ndarray, positions: np.ndarray, valid: np.ndarray, past: KVCache
    ) -> tuple[np.ndarray, KVCache]:
        ids, positions, valid = (torch.from_numpy(a).to(self.device) for a in (ids, positions, valid))
        state = InPlaceState(past, positions, valid)
        logits = self.model(ids, state, last_only=True)  # (B, V)
        state.commit()
        return logits.float().cpu().numpy(), past

    def select(self, past: KVCache, rows: np.ndarray) -> KVCache:
        return past.select(torch.from_numpy(rows).to(self.device))


class TorchEncoderDecoder:
    """An encoder-decoder behind the same three methods: the first `forward` takes the (left-padded) prompts to the
    encoder, computes each decoder layer's cross-attention keys and values once and feeds the start token; later
    calls take one decoder token per row. Decoder rows all start together, so they need no padding."""

    prompt_in_context = False

    def __init__(self, model: torch.nn.Module, start_id: int):
        self.model = model.eval()
        self.seq_len, self.vocab_size = model.shape.seq_len, model.shape.vocab_size
        self.start_id = model.shape.decoder_start(start_id)
        self.device = next(model.parameters()).device

    def empty(self, batch: int, slots: int | None = None) -> None:
        return None  # the cache is made from the encoder output on the first forward

    @torch.inference_mode()
    def forward(self, ids: np.ndarray, positions: np.ndarray, valid: np.ndarray, past: Any) -> tuple[np.ndarray, Any]:
        ids = torch.from_numpy(ids).to(self.device)
        if past is None:  # the prompts: encode once, then the decoder's first step from the start token
            past = self.model.start_decoding(ids, torch.from_numpy(np.ascontiguousarray(valid)).to(self.device))
            ids = torch.full((ids.size(0), 1), self.start_id, dtype=torch.long, device=self.device)
        logits = self.model.decode(ids, past, last_only=True)  # (B, V)
        return logits.float().cpu().numpy(), past

    def select(self, past: Any, rows: np.ndarray) -> Any:
        past.select(torch.from_numpy(rows).to(self.device))
        return past


class OnnxEncoderDecoder:
    """The encoder-decoder graphs of `export.onnx_seq2seq` on onnxruntime, behind the same three methods: the first
    `forward` runs the encoder and the first decoder step (which returns the cross-attention keys and values), later
    ones the decoder with past. The past is a list of numpy arrays per layer: self key, value, cross key, value."""

    prompt_in_context = False

    def __init__(self, folder: Path, shape: Any, start_id: int, threads: int | None = None):
        from llmrecipe.export.onnx_seq2seq import DECODER, DECODER_WITH_PAST, ENCODER

        self.seq_len, self.vocab_size, self.start_id = shape.seq_len, shape.vocab_size, shape.decoder_start(start_id)
        self.encoder, self.decoder, self.with_past = (_session(str(Path(folder) / name), threads)
                                                      for name in (ENCODER, DECODER, DECODER_WITH_PAST))
        self.past_inputs = [i.name for i in self.with_past.get_inputs()][2:]

    def empty(self, batch: int, slots: int | None = None) -> None:
        return None

    def forward(self, ids: np.ndarray, positions: np.ndarray, valid: np.ndarray, past: Any) -> tuple[np.ndarray, Any]:
        if past is None:
            mask = np.ascontiguousarray(valid, dtype=np.int64)
            memory = self.encoder.run(None, {"input_ids": ids, "attention_mask": mask})[0]
            start = np.full((ids.shape[0], 1), self.start_id, dtype=np.int64)
            logits, *caches = self.decoder.run(None, {"input_ids": start, "encoder_attention_mask": mask,
                                                      "encoder_hidden_states": memory})
            return logits[:, -1], {"mask": mask, "caches": caches}
        feeds = {"input_ids": ids, "encoder_attention_mask": past["mask"], **dict(zip(self.past_inputs, past["caches"]))}
        logits, *present = self.with_past.run(None, feeds)
        caches = list(past["caches"])
        for layer in range(len(present) // 2):  # the grown self-attention caches; the cross ones stay
            caches[4 * layer], caches[4 * layer + 1] = present[2 * layer], present[2 * layer + 1]
        return logits[:, -1], {"mask": past["mask"], "caches": caches}

    def select(self, past: Any, rows: np.ndarray) -> Any:
        return {"mask": past["mask"][rows], "caches": [np.ascontiguousarray(c[rows]) for c in past["caches"]]}


class OnnxDecoder:
    """A graph written by `export.onnx.export_decoder`, one cache input and output per layer and side (B, K, P, E),
    and the fused graph that fused.py builds from its weights (where it serves the export).

    A batch without padding (batch 1, prompts of one length) decodes with the fused graph on the CPU, its cache
    updated in place (a FusedCache); a left-padded batch, an export fused.py does not recognise, or any batch where
    onnxruntime has a GPU, with the portable graph and numpy caches through plain `session.run`, which measured as
    fast as IOBinding there (a batch-1 cache is a few hundred KB, and binding costs Python calls every step). The
    portable session is made on first need.
    """

    def __init__(self, path: Path, shape: Any, threads: int | None = None, fused: bool = True):
        import onnx

        from llmrecipe.export.onnx import decoder_output_names, onnx_providers, past_names
        from llmrecipe.generate.fused import fused_graph, read_weights

        self.path, self.threads = Path(path), threads
        self.shape, self.seq_len, self.vocab_size = shape, shape.seq_len, shape.vocab_size
        self.past_names, self.output_names = past_names(shape.n_layer), decoder_output_names(shape.n_layer)
        proto = onnx.load(str(path), load_external_data=False)  # inline weights come along; external ones stay
        self.input_names = [i.name for i in proto.graph.input]
        # The fused graph runs on the CPU (its caches are bound as host memory): where the portable graph would run
        # on a GPU, it keeps every batch.
        on_cpu = "CUDAExecutionProvider" not in onnx_providers()
        weights = read_weights(proto, shape) if fused and on_cpu and self.past_names[0] in self.input_names else None
        self.fused_session = (
            _session(fused_graph(weights, shape).SerializeToString(), threads, ["CPUExecutionProvider"])
            if weights else None
        )
        self._session = None

    @property
    def session(self):
        """The portable graph's session."""
        if self._session is None:
            self._session = _session(str(self.path), self.threads)
        return self._session

    def empty(self, batch: int, slots: int | None = None) -> FusedCache | list[np.ndarray]:
        """A fused cache with room for `slots` tokens if the fused graph exists (forward swaps it for portable
        caches if the batch turns out padded); else portable caches, which grow by concatenation."""
        if self.fused_session is not None:
            return FusedCache(self.fused_session, self.shape, batch, slots or self.seq_len)
        return self._portable_empty(batch)

    def _portable_empty(self, batch: int) -> list[np.ndarray]:
        from llmrecipe.export.onnx import empty_past

        return list(empty_past(self.shape, batch).values())

    def forward(
        self, ids: np.ndarray, positions: np.ndarray, valid: np.ndarray, past: FusedCache | list[np.ndarray]
    ) -> tuple[np.ndarray, FusedCache | list[np.ndarray]]:
        if isinstance(past, FusedCache):
            # Checked once, when the cache is first filled: rows without padding stay so (new slots are real tokens),
            # and at batch 1 the check would cost a visible share of every step.
            if past.length or valid.all():  # positions then count slots, as GroupQueryAttention counts them
                return past.run(ids)[:, -1], past  # (B, V)
            past = self._portable_empty(ids.shape[0])
        feeds = {
            "input_ids": ids,
            "position_ids": positions,
            "attention_mask": np.ascontiguousarray(valid, dtype=np.int64),  # valid may be a column slice
            **dict(zip(self.past_names, past)),
        }
        logits, *present = self.session.run(self.output_names, feeds)
        return logits[:, -1], present  # (B, V)

    def select(self, past: FusedCache | list[np.ndarray], rows: np.ndarray) -> FusedCache | list[np.ndarray]:
        if isinstance(past, FusedCache):
            return past.select(rows)
        return [np.ascontiguousarray(side[rows]) for side in past]


def _session(model: str | bytes, threads: int | None, providers: list[str] | None = None):
    import onnxruntime  # heavy: only ONNX artifacts need it

    from llmrecipe.export.onnx import onnx_providers

    return onnxruntime.InferenceSession(model, session_options(threads), providers=providers or onnx_providers())


def session_options(threads: int | None):
    """Settings for batch-1 decoding: all graph optimisations (fused attention and norms where the opset has
    them), operators run one after another (a decoder's graph is a chain), `threads` for each operator."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if threads:
        options.intra_op_num_threads = threads
    return options
