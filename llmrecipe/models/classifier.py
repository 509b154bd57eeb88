"""A classification head on a trained language model, and the classify artifact (config.json + model.safetensors).

The backbone's output layer is replaced by the identity, so it returns its final hidden states; one state
per example (the pooled token) goes through a linear layer to class logits.
Shapes: B batch, T time (sequence), D d_model, C classes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from llmrecipe.models.attention import PaddedRows
from llmrecipe.models.build import build_model, load_weights, saved_weights, with_adapters
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape

CLASSIFY_KEYS = ("task", "labels", "pooling", "max_seq_len", "head_bias")
"""What a classify artifact's config.json adds to the model shape."""


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, labels: list[str], pooling: str, max_seq_len: int | None = None,
                 head_bias: bool | None = None):
        """`head_bias` (None: by family) gives the head a bias. Decoders have none, like Hugging Face's
        `*ForSequenceClassification` heads, so the export there is exact; an encoder's head keeps one."""
        super().__init__()
        self.shape: ModelShape = backbone.shape
        self.labels = list(labels)
        self.pooling = pooling
        self.max_seq_len = max_seq_len or self.shape.seq_len
        """Tokens per text, marker included, as in training: evaluation cuts texts where training did."""
        backbone.lm_head = nn.Identity()  # hidden states (B, T, D) instead of next-token logits
        self.backbone = backbone
        self.head_bias = not family(self.shape.arch).causal if head_bias is None else head_bias
        self.score = nn.Linear(self.shape.d_model, len(labels), bias=self.head_bias)
        nn.init.normal_(self.score.weight, mean=0.0, std=0.02)
        if self.head_bias:
            nn.init.zeros_(self.score.bias)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Right-padded token ids (B, T) and true lengths (B,) -> class logits (B, C).

        A decoder never looks right, so padding does not change a row's state; an encoder would attend to the
        padding, so it gets a layout that masks it out.
        """
        if family(self.shape.arch).causal:
            hidden = self.backbone(ids)  # (B, T, D)
        else:
            hidden = self.backbone(ids, PaddedRows(lengths, ids.size(1)))  # (B, T, D)
        return self.score(self._pool(hidden, lengths))  # (B, C)

    def _pool(self, hidden: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, D): the state at the last real token of each row, or at the first."""
        if self.pooling == "first":
            return hidden[:, 0]
        rows = torch.arange(hidden.size(0), device=hidden.device)  # size(0), not len(): an ONNX batch axis stays free
        return hidden[rows, lengths.to(hidden.device) - 1]

    def config(self) -> dict[str, Any]:
        """config.json of the artifact: the backbone's shape plus the task, label set and pooling."""
        return {**self.shape.model_dump(mode="json"), "task": "classify", "labels": self.labels, "pooling": self.pooling,
                "max_seq_len": self.max_seq_len, "head_bias": self.head_bias}


def classifier_from_language_model(folder: Path, shape: ModelShape, labels: list[str], pooling: str, device: str,
                                   max_seq_len: int | None = None) -> Classifier:
    """A new head on the weights of a pretrain (or finetune) artifact's language model."""
    backbone = build_model(shape)
    load_weights(backbone, saved_weights(folder, shape))
    return Classifier(backbone, labels, pooling, max_seq_len).to(device)


def is_classifier_artifact(folder: Path) -> bool:
    return json.loads((folder / "config.json").read_text()).get("task") == "classify"


def is_encoder_artifact(folder: Path) -> bool:
    """A language model that reads both ways (`bert`): it embeds texts rather than continuing them."""
    config = json.loads((folder / "config.json").read_text())
    return config.get("task") is None and "arch" in config and family(config["arch"]).embeds_texts


def load_classifier(folder: Path, device: str = "cpu") -> Classifier:
    """A classify artifact folder -> the classifier in eval mode."""
    config = json.loads((folder / "config.json").read_text())
    shape = ModelShape.model_validate({k: v for k, v in config.items() if k not in CLASSIFY_KEYS})
    # artifacts written before `head_bias` was recorded all had a biased head
    model = Classifier(build_model(shape), config["labels"], config["pooling"], config.get("max_seq_len"),
                       config.get("head_bias", True))
    load_weights(model, with_adapters(folder, load_file(folder / "model.safetensors", device="cpu")))  # lora.merge = false
    return model.to(device).eval()


def pad_right(rows: list[list[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows padded on the right to the longest: ids (B, T) and lengths (B,)."""
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.long)  # (B,)
    ids = torch.full((len(rows), int(lengths.max())), pad_id, dtype=torch.long)  # (B, T)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids, lengths


@torch.no_grad()
def predict_probabilities(model: Classifier, rows: list[list[int]], batch_size: int, device: str) -> torch.Tensor:
    """Class probabilities (N, C) in fp32, rows in their given order; batched by similar length (less padding)."""
    was_training = model.training
    model.eval()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    probabilities = torch.empty(len(rows), len(model.labels))  # (N, C)
    for first in range(0, len(order), batch_size):
        chosen = order[first : first + batch_size]
        ids, lengths = pad_right([rows[i] for i in chosen])  # (b, T), (b,)
        logits = model(ids.to(device), lengths.to(device)).float()  # (b, C)
        probabilities[chosen] = torch.softmax(logits, dim=-1).cpu()
    model.train(was_training)
    return probabilities
