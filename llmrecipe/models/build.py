"""Build a family's model from its shape, and load a model artifact folder (config.json + model.safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape


def build_model(shape: ModelShape) -> torch.nn.Module:
    return family(shape.arch).module()(shape)


def load_trained(model_dir: Path, device: str = "cpu") -> tuple[torch.nn.Module, ModelShape]:
    """A model artifact folder (config.json + model.safetensors) -> the model in eval mode, and its shape."""
    shape = ModelShape.model_validate(json.loads((model_dir / "config.json").read_text()))
    model = build_model(shape)
    load_weights(model, with_adapters(model_dir, load_file(model_dir / "model.safetensors", device=device)))
    return model.to(device).eval(), shape


def with_adapters(model_dir: Path, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LoRA fine-tune saved unmerged (adapter_config.json says `"merged": false`) -> its adapters merged in."""
    config = model_dir / "adapter_config.json"
    if not config.is_file() or json.loads(config.read_text())["merged"]:
        return weights
    from llmrecipe.models.lora import merge_adapter_tensors

    adapter = load_file(model_dir / "adapter.safetensors", device=next(iter(weights.values())).device.type)
    return merge_adapter_tensors(weights, adapter, json.loads(config.read_text())["scale"])


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load a state dict saved without aliases: only a tied output weight may be missing."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tie = getattr(model, "shape", None) is not None and model.shape.tie_embeddings
    tied = {name for name in missing if tie and name.rsplit(".", 2)[-2:] == ["lm_head", "weight"]}
    if set(missing) - tied or unexpected:
        raise ValueError(f"weights do not fit the model: missing {sorted(set(missing) - tied)}, unexpected {unexpected}")
