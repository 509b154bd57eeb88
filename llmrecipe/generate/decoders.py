"""One cached forward pass, on torch or onnxruntime, behind the same three methods.

`forward(ids (B, T), positions (B, T), valid (B, P + T), past) -> (last logits (B, V), present)`,
`empty(batch)` for a cache with no past, and `select(past, rows)` to drop finished rows from a batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from llmrecipe.generate.cache import DecodeState, LayerCache


class TorchDecoder:
    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()
        shape = model.shape
        self.seq_len, self.vocab_size = shape.seq_len, shape.vocab_size
        self.cache_shape = (shape.n_kv_head, shape.head_dim)
        self.n_layer = shape.n_layer
        self.device = next(model.parameters()).device

    def empty(self, batch: int) -> list[LayerCache]:
        nothing = torch.zeros(batch, *self.cache_shape[:1], 0, self.cache_shape[1], device=self.device)  # (B, K, 0, E)
        return [(nothing, nothing)] * self.n_layer

    @torch.inference_mode()
    def forward(
        self, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, past: list[LayerCache]
    ) -> tuple[torch.Tensor, list[LayerCache]]:
        state = DecodeState(past, positions.to(self.device), valid.to(self.device))
        logits = self.model(ids.to(self.device), cache=state)  # (B, T, V)
        return logits[:, -1].float().cpu(), state.present

    def select(self, past: list[LayerCache], rows: torch.Tensor) -> list[LayerCache]:
        rows = rows.to(self.device)
        return [(k[rows], v[rows]) for k, v in past]


class OnnxDecoder:
    """A graph written by `export.onnx.export_decoder`: stacked caches (layers, B, K, P, E) in and out."""

    def __init__(self, path: Path, shape: Any, threads: int | None = None):
        import onnxruntime  # heavy: only ONNX artifacts need it

        from llmrecipe.export.onnx import onnx_providers

        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(str(path), options, providers=onnx_providers())
        self.seq_len, self.vocab_size = shape.seq_len, shape.vocab_size
        self.cache_shape = (shape.n_layer, shape.n_kv_head, shape.head_dim)

    def empty(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        layers, heads, size = self.cache_shape
        nothing = np.zeros((layers, batch, heads, 0, size), dtype=np.float32)
        return nothing, nothing

    def forward(
        self, ids: torch.Tensor, positions: torch.Tensor, valid: torch.Tensor, past: tuple[np.ndarray, np.ndarray]
    ) -> tuple[torch.Tensor, tuple[np.ndarray, np.ndarray]]:
        feeds = {
            "input_ids": ids.numpy(),
            "position_ids": positions.numpy(),
            "attention_mask": valid.long().numpy(),
            "past_keys": past[0],
            "past_values": past[1],
        }
        logits, keys, values = self.session.run(["logits", "present_keys", "present_values"], feeds)
        return torch.from_numpy(logits[:, -1]), (keys, values)  # (B, V)

    def select(self, past: tuple[np.ndarray, np.ndarray], rows: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        index = rows.numpy()
        return np.ascontiguousarray(past[0][:, index]), np.ascontiguousarray(past[1][:, index])
