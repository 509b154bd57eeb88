"""One cached forward pass, on torch or onnxruntime, behind the same three methods.

`forward(ids (B, T), positions (B, T), valid (B, P + T), past) -> (last logits (B, V), present)`,
`empty(batch, slots)` for a cache with no past and room for `slots` tokens, and `select(past, rows)` to drop
finished rows from a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrecipe.generate.cache import InPlaceState, KVCache
from llmrecipe.generate.step import decode_step


class TorchDecoder:
    """The model's decoding step (step.py) with a KVCache written in place: `present` is `past` itself, grown."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        self.step = decode_step(model)
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
        self, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, past: KVCache
    ) -> tuple[torch.Tensor, KVCache]:
        state = InPlaceState(past, positions.to(self.device), valid.to(self.device))
        logits = self.step(ids.to(self.device), state)  # (B, V)
        state.commit()
        return logits.float().cpu(), past

    def select(self, past: KVCache, rows: torch.Tensor) -> KVCache:
        return past.select(rows.to(self.device))


class OnnxDecoder:
    """A graph written by `export.onnx.export_decoder`: one cache input and output per layer and side, (B, K, P, E).

    Plain `session.run` with numpy caches: measured here against IOBinding with the caches kept as OrtValues,
    it was as fast or faster (a batch-1 cache is a few hundred KB; binding costs Python calls every step).
    """

    def __init__(self, path: Path, shape: Any, threads: int | None = None):
        import onnxruntime  # heavy: only ONNX artifacts need it

        from llmrecipe.export.onnx import decoder_output_names, onnx_providers, past_names

        self.session = onnxruntime.InferenceSession(str(path), session_options(threads), providers=onnx_providers())
        self.shape, self.seq_len, self.vocab_size = shape, shape.seq_len, shape.vocab_size
        self.past_names, self.output_names = past_names(shape.n_layer), decoder_output_names(shape.n_layer)

    def empty(self, batch: int, slots: int | None = None) -> list[np.ndarray]:
        """The graph's caches grow by concatenation: `slots` (the most a batch will use) needs no room set aside."""
        from llmrecipe.export.onnx import empty_past

        return list(empty_past(self.shape, batch).values())

    def forward(
        self, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, past: list[np.ndarray]
    ) -> tuple[torch.Tensor, list[np.ndarray]]:
        feeds = {
            "input_ids": ids.numpy(),
            "position_ids": positions.numpy(),
            "attention_mask": np.ascontiguousarray(valid.numpy(), dtype=np.int64),  # valid may be a column slice
            **dict(zip(self.past_names, past)),
        }
        logits, *present = self.session.run(self.output_names, feeds)
        return torch.from_numpy(logits[:, -1]), present  # (B, V)

    def select(self, past: list[np.ndarray], rows: torch.Tensor) -> list[np.ndarray]:
        index = rows.numpy()
        return [np.ascontiguousarray(side[index]) for side in past]


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
