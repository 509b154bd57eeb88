"""Resumable checkpoints in safetensors: weights, optimizer moments and the loop's counters, with their digests.

Layout: `<scratch>/step-00001200/{model.safetensors, optimizer.safetensors, state.json}`, written into a
temporary folder and renamed into place, so a kill at any moment leaves either a whole checkpoint or none.
state.json lists each file's size and sha256: a checkpoint damaged later (a truncated copy, a flipped byte) is
found at resume and passed over for the previous one, with a warning naming the file. No RNG state is stored because
none is needed: every random draw in training is seeded from (seed, step). Nothing is unpickled. A checkpoint holds
the full (unsharded) state, so a run saved by N processes resumes with any number M; under FSDP the state is
gathered to the main process's CPU memory only, and loaded by it and broadcast.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

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

from llmrecipe.digests import sha256_file
from llmrecipe.models.build import load_weights
from llmrecipe.training.distributed import World, barrier, is_sharded
from llmrecipe.training.saved import checkpoint_name

KEEP = 2
"""The newest checkpoints kept; older ones are deleted once a newer one is complete. Two, so a damaged newest one
still leaves a good one to resume from."""
GATHERED = StateDictOptions(full_state_dict=True, cpu_offload=True)
"""Under FSDP: the full state on the main process's CPU only (the others get an empty dict)."""
BROADCAST = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
"""Under FSDP: the main process's full state, scattered to every process's shards."""


def model_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Full state dict without aliases: a tied output weight is stored once, as the embedding.

    Under FSDP gathering is collective, so every process must call this; only the main process gets the tensors.
    """
    aliases, seen = set(), set()
    for name, tensor in model.state_dict().items():
        local = tensor.to_local() if isinstance(tensor, DTensor) else tensor
        if local.data_ptr() in seen:
            aliases.add(name)
        seen.add(local.data_ptr())
    full = get_model_state_dict(model, options=GATHERED) if is_sharded(model) else model.state_dict()
    return {name: t.detach().cpu().contiguous() for name, t in full.items() if name not in aliases}


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
    final = folder / checkpoint_name(step)
    weights = model_tensors(model)
    moments, layout = _flatten_optimizer(model, optimizer)
    if not world.is_main:
        barrier(world)
        return final
    temporary = folder / f".partial-{checkpoint_name(step)}"
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir(parents=True)
    save_file(weights, str(temporary / "model.safetensors"))
    save_file(moments, str(temporary / "optimizer.safetensors"))
    files = {name: _digest(temporary / name) for name in ("model.safetensors", "optimizer.safetensors")}
    (temporary / "state.json").write_text(json.dumps({"counters": counters, "optimizer": layout, "files": files},
                                                     indent=1))
    if final.exists():  # a damaged checkpoint of this step, passed over at resume: the new one takes its place
        stale = folder / f".stale-step-{step:08d}"
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(final, stale)
        shutil.rmtree(stale, ignore_errors=True)
    os.replace(temporary, final)
    for old in sorted(folder.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    barrier(world)
    return final


def latest_checkpoint(folder: Path, warn: Callable[[str], None] = lambda message: None) -> Path | None:
    """The newest complete checkpoint whose files match their recorded sizes and digests; damaged ones are passed
    over (newest first) with a warning naming the file."""
    for path in sorted(folder.glob("step-*"), reverse=True):
        if (problem := _damage(path)) is None:
            return path
        warn(f"checkpoint {path.name} is damaged ({problem}); resuming from the one before it")
    return None


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: str,
                    world: World = World()) -> dict[str, Any]:
    """Restore weights and optimizer in place (under FSDP each process takes its shard); returns the counters."""
    load_model_weights(path / "model.safetensors", model, device, world)
    saved = json.loads((path / "state.json").read_text())
    sharded = is_sharded(model)
    moments = load_file(path / "optimizer.safetensors", device="cpu" if sharded else device)
    state = _unflatten_optimizer(moments, saved["optimizer"]) if world.is_main or not sharded else {}
    set_optimizer_state_dict(model, optimizer, state, options=BROADCAST if sharded else StateDictOptions(full_state_dict=True))
    return saved["counters"]


def load_model_weights(path: Path, model: nn.Module, device: str, world: World = World()) -> None:
    """Put the full weights of a safetensors file into `model`; under FSDP the main process reads the file and each
    process takes its shard."""
    if not is_sharded(model):
        load_weights(model, load_file(path, device=device))
        return
    weights = load_file(path, device="cpu") if world.is_main else {}
    if weights and getattr(model, "shape", None) is not None and model.shape.tie_embeddings:
        weights["lm_head.weight"] = weights["embed.weight"]  # stored once; both names are wanted here
    set_model_state_dict(model, weights, options=BROADCAST)


def _digest(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def _damage(path: Path) -> str | None:
    """Why a checkpoint folder cannot be trusted, or None when its files are what state.json recorded."""
    try:
        files = json.loads((path / "state.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return "state.json missing or unreadable"
    for name, recorded in files.items():
        file = path / name
        if not file.is_file() or file.stat().st_size != recorded["size"]:
            return f"{name} is missing or not {recorded['size']} bytes"
        if _digest(file)["sha256"] != recorded["sha256"]:
            return f"{name} does not match its sha256"
    return None


def _flatten_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Full optimizer state keyed by parameter name -> flat tensors (`<param>:<slot>`) + a JSON layout of the rest.

    Names, not positions, identify parameters, so the layout does not depend on how the model was wrapped.
    """
    options = GATHERED if is_sharded(model) else StateDictOptions(full_state_dict=True)
    state_dict = get_optimizer_state_dict(model, optimizer, options=options)
    tensors, scalars = {}, {}
    for param, slots in state_dict.get("state", {}).items():
        for slot, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{param}:{slot}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{param}:{slot}"] = value
    return tensors, {"param_groups": state_dict.get("param_groups", []), "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], layout: dict[str, Any]) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for key, value in [*tensors.items(), *layout["scalars"].items()]:
        param, slot = key.rsplit(":", 1)
        state.setdefault(param, {})[slot] = value
    return {"state": state, "param_groups": layout["param_groups"]}
