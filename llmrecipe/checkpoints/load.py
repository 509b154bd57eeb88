"""Loading an imported checkpoint's weights into our model: shard by shard, memory-mapped, without a second copy.

The model is built on the meta device (no memory, no random initialisation); each safetensors file is opened
memory-mapped, its tensors renamed (and transposed or concatenated) by the family's Hugging Face layout, cast to the
dtype the weights are held in and assigned into the model; the file is closed before the next one is opened. Peak
memory is the model plus the tensors of one file in flight.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterator

import torch
from safetensors import safe_open

from llmrecipe.checkpoints.headers import tensor_headers
from llmrecipe.checkpoints.locate import match_layout
from llmrecipe.checkpoints.reference import check_unchanged, read_reference
from llmrecipe.errors import StepError
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def load_imported(model_dir: Path, shape: ModelShape, device: str = "cpu", dtype: str | None = None) -> torch.nn.Module:
    """An import artifact's model in eval mode, weights in `dtype` (default: the one the import step resolved)."""
    from llmrecipe.models.build import build_model

    reference = read_reference(model_dir)
    held = DTYPES[dtype or reference["dtype"]]
    with torch.device("meta"):
        model = build_model(shape)
    for name, tensor in imported_tensors(model_dir, shape, held):
        _assign(model, name, tensor)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    left = [name for name, p in model.named_parameters() if p.is_meta]
    if left:
        raise StepError(f"the checkpoint referenced by {model_dir} left {left[:4]} unloaded; import it again")
    return model.to(device=device, dtype=held).eval()  # the rotary tables too: q and k stay in the weights' dtype


def imported_state(model_dir: Path, shape: ModelShape, dtype: str = "fp32") -> dict[str, torch.Tensor]:
    """An import artifact's weights as our state dict (what fine-tuning starts from: fp32 master weights)."""
    return dict(imported_tensors(model_dir, shape, DTYPES[dtype]))


def imported_tensors(model_dir: Path, shape: ModelShape, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """(our name, tensor) for every weight, file by file; each file is closed before the next is opened."""
    reference = read_reference(model_dir)
    folder = Path(reference["folder"])
    check_unchanged(folder, reference["files"])
    arch = family(shape.arch)
    layout = arch.hf_layout(shape)
    where = {}  # their stored name -> file
    stored = {}
    for entry in reference["files"]:
        for name, header in tensor_headers(folder / entry["name"]).items():
            where[name], stored[name] = folder / entry["name"], tuple(header["shape"])
    names, problems = match_layout(arch, shape, stored)
    if problems:
        raise StepError(f"{folder}: the checkpoint's tensors do not match its config.json: {'; '.join(problems)}")
    by_file = defaultdict(list)
    for entry in layout:
        by_file[where[names[entry.theirs[0]]]].append(entry)
    for path, entries in sorted(by_file.items()):
        with safe_open(str(path), framework="pt", device="cpu") as shard:
            for entry in entries:
                parts = [_part(shard, path, names[name], where) for name in entry.theirs]
                tensor = parts[0] if len(parts) == 1 else torch.cat(parts)
                tensor = tensor.t() if entry.transposed else tensor
                yield entry.ours, tensor.to(dtype).contiguous()


def _part(shard, path: Path, name: str, where: dict[str, Path]) -> torch.Tensor:
    if where[name] == path:
        return shard.get_tensor(name)
    with safe_open(str(where[name]), framework="pt", device="cpu") as other:  # a concatenation across files
        return other.get_tensor(name)


def _assign(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    setattr(owner, attribute, torch.nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))
