"""Loading an imported checkpoint's weights into our model: shard by shard, each tensor read straight into its own
memory, without a second copy of the model.

The model is built on the meta device (no memory, no random initialisation). Each safetensors file's header gives
every tensor's byte range; a tensor is read from there into a new tensor of its stored dtype (the operating system's
page cache serves repeated loads), renamed (and transposed or concatenated) by the family's Hugging Face layout,
cast to the dtype the weights are held in and assigned into the model. Not memory-mapped: the pages of a mapped
file count in the process's resident memory until it is unmapped, so mapping a 2.5 GB single-file checkpoint to
copy from it would double the peak; read into place, the peak is the model plus one tensor in flight.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Iterator

import torch
from llmrecipe.checkpoints.headers import tensor_headers
from llmrecipe.checkpoints.locate import match_layout
from llmrecipe.checkpoints.reference import check_unchanged, read_reference
from llmrecipe.errors import StepError
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
STORED = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
"""safetensors dtype names -> torch dtypes (the locate step refuses any other)."""
HEADER_PREFIX = 8
"""A safetensors file starts with its header's length (8 bytes), then the header; tensor offsets count from there."""


def load_imported(model_dir: Path, shape: ModelShape, device: str = "cpu", dtype: str | None = None) -> torch.nn.Module:
    """An import artifact's model in eval mode, weights in `dtype` (default: the one the import step resolved)."""
    from llmrecipe.models.build import empty_model

    reference = read_reference(model_dir)
    held = DTYPES[dtype or reference["dtype"]]
    model = empty_model(shape)
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
    where, stored, headers = {}, {}, {}
    for entry in reference["files"]:
        path = folder / entry["name"]
        for name, header in tensor_headers(path).items():
            where[name], stored[name], headers[name] = path, tuple(header["shape"]), header
    names, problems = match_layout(arch, shape, stored)
    if problems:
        raise StepError(f"{folder}: the checkpoint's tensors do not match its config.json: {'; '.join(problems)}")
    by_file = defaultdict(list)
    for entry in layout:
        by_file[where[names[entry.theirs[0]]]].append(entry)
    for path, entries in sorted(by_file.items()):
        with open(path, "rb") as shard:
            for entry in entries:
                parts = [_read_from(shard, path, where[names[name]], headers[names[name]]) for name in entry.theirs]
                tensor = parts[0] if len(parts) == 1 else torch.cat(parts)
                tensor = tensor.t() if entry.transposed else tensor
                yield entry.ours, tensor.to(dtype).contiguous()


def _read_from(shard, shard_path: Path, path: Path, header: dict) -> torch.Tensor:
    """A tensor of the open shard, or of another file (a concatenation whose parts lie in two files)."""
    if path == shard_path:
        return _read(shard, path, header)
    with open(path, "rb") as other:
        return _read(other, path, header)


def _read(file, path: Path, header: dict) -> torch.Tensor:
    """One tensor read from its byte range straight into its own memory."""
    tensor = torch.empty(header["shape"], dtype=STORED[header["dtype"]])
    start, end = header["data_offsets"]
    buffer = memoryview(tensor.view(torch.uint8).numpy()).cast("B") if tensor.numel() else memoryview(bytearray())
    if end - start != len(buffer):
        raise StepError(f"{path}: its header gives {end - start} bytes for a {list(tensor.shape)} {header['dtype']} tensor")
    file.seek(0)
    data_start = HEADER_PREFIX + int.from_bytes(file.read(HEADER_PREFIX), "little")
    file.seek(data_start + start)
    if file.readinto(buffer) != len(buffer):
        raise StepError(f"{path} is cut short: a tensor's bytes end past the file; download it again")
    return tensor


def _assign(model: torch.nn.Module, name: str, tensor: torch.Tensor) -> None:
    owner_name, _, attribute = name.rpartition(".")
    owner = model.get_submodule(owner_name)
    setattr(owner, attribute, torch.nn.Parameter(tensor, requires_grad=tensor.is_floating_point()))
