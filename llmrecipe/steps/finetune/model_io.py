"""The starting model of a finetune step (embeddings grown for new tokens, LoRA applied), its training through the
one trainer, and the weights it writes.

Weights are written from the gathered state dict (under FSDP only the main process holds it), so LoRA adapters are
merged tensor by tensor, without a second copy of the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llmrecipe.models.build import build_model, load_weights, saved_weights
from llmrecipe.models.lora import ADAPTER_KEYS, apply_lora, merge_adapter_tensors
from llmrecipe.models.registry import family
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.steps.training import train_config
from llmrecipe.training.checkpoint import model_tensors
from llmrecipe.training.distributed import World
from llmrecipe.training.metrics import write_training_outputs
from llmrecipe.training.optim import NO_DECAY
from llmrecipe.training.task import Task
from llmrecipe.training.trainer import Trainer

EMBEDDING_ROWS = ("embed.weight", "lm_head.weight")


def starting_model(spec: FinetuneSpec, init_dir: Path, new_ids: list[int], known_tokens: int) -> nn.Module:
    """The init model's weights in the output shape: rows of `new_ids` start at the mean embedding of the
    `known_tokens` real tokens (a neutral point the new tokens move away from, as Hewitt (2021) suggests)."""
    saved = json.loads((init_dir / "config.json").read_text())
    if saved != spec.init_model.model_dump(mode="json"):
        raise_mismatch(init_dir)
    weights = saved_weights(init_dir, spec.init_model)  # a LoRA init saved unmerged, or an import's checkpoint
    grown = {name: grow_rows(tensor, spec.model.vocab_size, new_ids, known_tokens) if name in EMBEDDING_ROWS else tensor
             for name, tensor in weights.items()}
    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    load_weights(model, grown)
    return model


def raise_mismatch(init_dir: Path) -> None:
    from llmrecipe.errors import StepError

    raise StepError(f"{init_dir / 'config.json'} is not the model shape the plan derived for the init step; "
                    "run the init step again (`llmrecipe run RECIPE --force INIT`)")


def grow_rows(matrix: torch.Tensor, rows: int, new_ids: list[int], known_tokens: int) -> torch.Tensor:
    """(V_old, D) -> (rows, D): old rows kept, rows of new tokens set to the mean of the known tokens' rows."""
    grown = torch.zeros(rows, matrix.size(1), dtype=matrix.dtype)  # (V_new, D)
    grown[: matrix.size(0)] = matrix
    if new_ids:
        grown[new_ids] = matrix[:known_tokens].mean(dim=0)
    return grown


def adapt(model: nn.Module, spec: FinetuneSpec, new_ids: list[int]) -> int:
    """LoRA when the spec asks for it (the new tokens' embedding rows train too), else every parameter; returns the
    number of parameters that learn."""
    if spec.lora is None:
        return sum(p.numel() for p in model.parameters())
    torch.manual_seed(spec.seed)  # the adapters' A matrices
    adapters = apply_lora(model, spec.lora)
    return adapters + train_rows_only(model, new_ids)


def train_rows_only(model: nn.Module, new_ids: list[int]) -> int:
    """Let only the given embedding (and untied output) rows learn: the gradient of every other row is zeroed, and
    the matrix is not decayed (decay would move the frozen rows). A new token starts untrained, so the adapters alone
    could hardly learn to produce it."""
    if not new_ids:
        return 0
    params = {id(p): p for name, p in model.named_parameters() if name in EMBEDDING_ROWS}.values()  # tied: once
    for param in params:
        mask = torch.zeros(param.size(0), 1)  # (V, 1); moved to the gradient's device when it arrives
        mask[new_ids] = 1.0
        param.requires_grad_(True)
        setattr(param, NO_DECAY, True)
        param.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device, grad.dtype))
    return len(new_ids) * model.shape.d_model * len(params)


def train_and_write(model: nn.Module, task: Task, spec: FinetuneSpec, ctx: StepContext, world: World, title: str,
                    config: str | None = None, score_start: bool = True) -> dict[str, Any]:
    """Train with the one trainer, then (main process) write the model, its best weights and the training outputs.
    `config` is the output's config.json text (default: the model shape)."""
    arch = family(spec.model.arch)
    trainer = Trainer(model, task, train_config(spec, arch, score_start=score_start), ctx, world)
    summary = trainer.fit()
    records = summary.pop("metrics_records")
    state = model_tensors(model)  # collective under FSDP: every process gathers, the main one holds it
    if world.is_main:
        write_model(state, spec, ctx.out_dir, ctx.scratch_dir / "best" / "model.safetensors", config)
        write_training_outputs(records, ctx.scratch_dir, ctx.out_dir, f"{ctx.name}: {title}, {summary['steps']} steps")
    return summary


def plain_weights(state: dict[str, torch.Tensor], spec: FinetuneSpec, merge: bool) -> dict[str, torch.Tensor]:
    """What model.safetensors holds: merged weights, or (merge = false) the weights without the adapters."""
    base = {name: t for name, t in state.items() if name.rsplit(".", 1)[-1] not in ADAPTER_KEYS}
    if spec.lora is None or not merge:
        return base
    adapters = {name: t for name, t in state.items() if name.rsplit(".", 1)[-1] in ADAPTER_KEYS}
    return merge_adapter_tensors(base, adapters, spec.lora.alpha / spec.lora.rank)


def write_model(state: dict[str, torch.Tensor], spec: FinetuneSpec, out: Path, best_weights: Path | None,
                config: str | None = None) -> None:
    """model.safetensors + config.json (`config`, by default the model shape) + adapter files for LoRA runs;
    best/ holds the best validation weights, merged."""
    config = config if config is not None else spec.model.model_dump_json(indent=2)
    merge = spec.lora is None or spec.lora.merge
    save_file(plain_weights(state, spec, merge), str(out / "model.safetensors"))
    (out / "config.json").write_text(config)
    if spec.lora is not None:
        adapters = {name: t for name, t in state.items() if name.rsplit(".", 1)[-1] in ADAPTER_KEYS}
        save_file(adapters, str(out / "adapter.safetensors"))
        adapter = {"rank": spec.lora.rank, "alpha": spec.lora.alpha, "targets": spec.lora.targets,
                   "scale": spec.lora.alpha / spec.lora.rank, "merged": merge}
        (out / "adapter_config.json").write_text(json.dumps(adapter, indent=2))
    if best_weights is not None and best_weights.is_file():
        (out / "best").mkdir(exist_ok=True)
        save_file(plain_weights(load_file(best_weights), spec, True), str(out / "best" / "model.safetensors"))
        (out / "best" / "config.json").write_text(config)


def copy_tokenizer(source: Path, out: Path) -> None:
    for name in ("tokenizer.json", "meta.json", "chat_template.jinja", "tokenizer_config.json"):
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
