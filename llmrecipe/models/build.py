"""Build a family's model from its shape, and load a model artifact folder (config.json + model.safetensors)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file

from llmrecipe.checkpoints.reference import read_reference
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape


def build_model(shape: ModelShape) -> torch.nn.Module:
    return family(shape.arch).module()(shape)


def empty_model(shape: ModelShape) -> torch.nn.Module:
    """The model on the meta device, for weights loaded from elsewhere: no memory and no random initialisation."""
    with torch.device("meta"), _initialisation_skipped():
        return build_model(shape)


INITIALISERS = ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
                "xavier_normal_", "zeros_", "ones_", "constant_")


@contextlib.contextmanager
def _initialisation_skipped() -> Iterator[None]:
    # Every module initialises through torch.nn.init; on meta tensors those calls do nothing useful yet run through
    # torch's reference decompositions, whose first use imports torch._dynamo (about a second per process).
    saved = {name: getattr(torch.nn.init, name) for name in INITIALISERS}
    for name in INITIALISERS:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, initialiser in saved.items():
            setattr(torch.nn.init, name, initialiser)


def load_trained(model_dir: Path, device: str = "cpu", dtype: str | None = "fp32") -> tuple[torch.nn.Module, ModelShape]:
    """A model artifact folder (config.json + model.safetensors, or an import's reference to its checkpoint) -> the
    model in eval mode, and its shape. `dtype`: what an imported model's weights are held in (None: the dtype its
    import step chose); trained artifacts hold fp32."""
    shape = ModelShape.model_validate(json.loads((model_dir / "config.json").read_text()))
    if read_reference(model_dir) is not None:
        from llmrecipe.checkpoints.load import load_imported

        return load_imported(model_dir, shape, device, dtype), shape
    model = build_model(shape)
    load_weights(model, with_adapters(model_dir, load_file(model_dir / "model.safetensors", device=device)))
    return model.to(device).eval(), shape


def saved_weights(model_dir: Path, shape: ModelShape) -> dict[str, torch.Tensor]:
    """A model artifact's weights as a state dict on the CPU: its own file (adapters merged in), or the fp32 weights
    of the checkpoint an import step references."""
    if read_reference(model_dir) is not None:
        from llmrecipe.checkpoints.load import imported_state

        return imported_state(model_dir, shape)
    return with_adapters(model_dir, load_file(model_dir / "model.safetensors", device="cpu"))


def with_adapters(model_dir: Path, weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A LoRA fine-tune saved unmerged (adapter_config.json says `"merged": false`) -> its adapters merged in."""
    config = model_dir / "adapter_config.json"
    if not config.is_file() or json.loads(config.read_text())["merged"]:
        return weights
    from llmrecipe.models.lora import merge_adapter_tensors

    adapter = load_file(model_dir / "adapter.safetensors", device=next(iter(weights.values())).device.type)
    return merge_adapter_tensors(weights, adapter, json.loads(config.read_text())["scale"])


def load_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load a state dict saved without aliases: only a weight shared with another (a tied output) may be missing."""
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    tied = set(missing) & aliases(model)
    if set(missing) - tied or unexpected:
        raise ValueError(f"weights do not fit the model: missing {sorted(set(missing) - tied)}, unexpected {unexpected}")


def aliases(model: torch.nn.Module) -> set[str]:
    """Names of parameters that are the same tensor as an earlier-named one (a tied output weight)."""
    first: dict[int, str] = {}
    found = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in first:
            found.add(name)
        first.setdefault(id(param), name)
    return found
