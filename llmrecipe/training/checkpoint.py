"""Resumable checkpoints in safetensors: weights, optimizer moments and the loop's counters.

Layout: `<scratch>/step-00001200/{model.safetensors, optimizer.safetensors, state.json}`, written into a
temporary folder and renamed into place, so a kill at any moment leaves either a whole checkpoint or
none. No RNG state is stored because none is needed: every random draw in training is seeded from
(seed, step) (see training/batches.py and training/loop.py). Nothing is unpickled.
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

from llmrecipe.models import load_weights

KEEP = 2  # the newest checkpoints kept; older ones are deleted once a newer one is complete


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without aliases: a tied output weight is stored once, as the embedding."""
    state, seen = {}, set()
    for name, tensor in model.state_dict().items():
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        state[name] = tensor.detach().contiguous()
    return state


def save_weights(model: nn.Module, path: Path) -> None:
    save_file(model_tensors(model), str(path))


def save_checkpoint(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, counters: dict[str, Any]) -> Path:
    step = counters["step"]
    final = folder / f"step-{step:08d}"
    temporary = folder / f".partial-step-{step:08d}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_weights(model, temporary / "model.safetensors")
    moments, layout = _flatten_optimizer(optimizer)
    save_file(moments, str(temporary / "optimizer.safetensors"))
    (temporary / "state.json").write_text(json.dumps({"counters": counters, "optimizer": layout}, indent=1))
    os.replace(temporary, final)
    for old in sorted(folder.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    complete = sorted(p for p in folder.glob("step-*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: str) -> dict[str, Any]:
    """Restore weights and optimizer in place; returns the loop counters saved with them."""
    load_weights(model, load_file(path / "model.safetensors", device=device))
    saved = json.loads((path / "state.json").read_text())
    moments = load_file(path / "optimizer.safetensors", device=device)
    optimizer.load_state_dict(_unflatten_optimizer(moments, saved["optimizer"]))
    return saved["counters"]


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state dict -> flat tensors (`<param>.<name>`) + a JSON layout of everything else."""
    state_dict = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state_dict["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *layout["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": layout["param_groups"]}
