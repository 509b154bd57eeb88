"""Resumable checkpoints in safetensors: weights, optimizer moments and the loop's counters.

Layout: `<scratch>/step-00001200/{model.safetensors, optimizer.safetensors, state.json}`, written into a
temporary folder and renamed into place, so a kill at any moment leaves either a whole checkpoint or
none. No RNG state is stored because none is needed: every random draw in training is seeded from
(seed, step) (see training/batches.py and training/loop.py). Nothing is unpickled. A checkpoint holds the
full (unsharded) state, so a run saved by N processes resumes with any number M.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor

from llmrecipe.models import load_weights
from llmrecipe.training.distributed import World, barrier

KEEP = 2  # the newest checkpoints kept; older ones are deleted once a newer one is complete


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full state dict without aliases: a tied output weight is stored once, as the embedding.

    With FSDP each process holds a shard; gathering them is collective, so every process must call this.
    """
    state, seen, aliases = {}, set(), set()
    for name, tensor in model.state_dict().items():
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        if local.data_ptr() in seen:
            aliases.add(name)
        seen.add(local.data_ptr())
    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    for name, tensor in full.items():
        if name not in aliases:
            state[name] = tensor.detach().cpu().contiguous()
    return state


def save_weights(model: nn.Module, path: Path, world: World = World()) -> None:
    """Collective under FSDP (every process calls it); the main process writes."""
    tensors = model_tensors(model)
    if world.is_main:
        save_file(tensors, str(path))


def save_best(folder: Path, model: nn.Module, world: World) -> None:
    """The weights with the best validation loss so far, replaced atomically (the main process writes)."""
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(model, folder / ".partial.safetensors", world)
    if world.is_main:
        os.replace(folder / ".partial.safetensors", folder / "model.safetensors")
    barrier(world)


def save_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, counters: dict[str, Any], world: World = World()
) -> Path:
    """The full (unsharded) state, gathered from every process; the main process writes it."""
    step = counters["step"]
    final = folder / f"step-{step:08d}"
    weights = model_tensors(model)
    moments, layout = _flatten_optimizer(model, optimizer)
    if not world.is_main:
        barrier(world)
        return final
    temporary = folder / f".partial-step-{step:08d}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_file(weights, str(temporary / "model.safetensors"))
    save_file(moments, str(temporary / "optimizer.safetensors"))
    (temporary / "state.json").write_text(json.dumps({"counters": counters, "optimizer": layout}, indent=1))
    os.replace(temporary, final)
    for old in sorted(folder.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    barrier(world)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    complete = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: str) -> dict[str, Any]:
    """Restore weights and optimizer in place (each process takes its shard under FSDP); returns the counters."""
    load_model_weights(path / "model.safetensors", model, device)
    saved = json.loads((path / "state.json").read_text())
    moments = load_file(path / "optimizer.safetensors", device=device)
    set_optimizer_state_dict(model, optimizer, _unflatten_optimizer(moments, saved["optimizer"]),
                             options=StateDictOptions(full_state_dict=True))
    return saved["counters"]


def load_model_weights(path: Path, model: nn.Module, device: str) -> None:
    """Put the full weights of a safetensors file into `model` (each process takes its shard under FSDP)."""
    weights = load_file(path, device=device)
    if any(isinstance(p, DTensor) for p in model.parameters()):
        tied = {"lm_head.weight": weights["embed.weight"]} if getattr(model.shape, "tie_embeddings", False) else {}
        set_model_state_dict(model, {**weights, **tied}, options=StateDictOptions(full_state_dict=True))
    else:
        load_weights(model, weights)


def _flatten_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Full optimizer state keyed by parameter name -> flat tensors (`<param>:<slot>`) + a JSON layout of the rest.

    Names, not positions, identify parameters, so the layout does not depend on how the model was wrapped.
    """
    state_dict = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True))
    tensors, scalars = {}, {}
    for param, slots in state_dict["state"].items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{param}:{slot}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param}:{slot}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *layout["scalars"].items()]:
        param, slot = key.rsplit(":", 1)
        state.setdefault(param, {})[slot] = value
    return {"state": state, "param_groups": layout["param_groups"]}
