"""The starting model of a finetune step (embeddings grown for new tokens, LoRA applied) and the weights it writes."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from llmrecipe.finetune.lora import ADAPTER_KEYS, apply_lora, lora_state_dict, merge_lora
from llmrecipe.models import build_model, load_weights, with_adapters
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.training.checkpoint import model_tensors

EMBEDDING_ROWS = ("embed.weight", "lm_head.weight")


def starting_model(spec: FinetuneSpec, init_dir: Path, new_ids: list[int], known_tokens: int) -> nn.Module:
    """The init model's weights in the output shape: rows of `new_ids` start at the mean embedding of the
    `known_tokens` real tokens (a neutral point the new tokens move away from, as Hewitt (2021) suggests)."""
    saved = json.loads((init_dir / "config.json").read_text())
    if saved != spec.init_model.model_dump(mode="json"):
        raise_mismatch(init_dir)
    weights = with_adapters(init_dir, load_file(init_dir / "model.safetensors"))  # a LoRA init saved unmerged
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
    """Let only the given embedding (and untied output) rows learn: the gradient of every other row is zeroed.
    A new token starts untrained, so the adapters alone could hardly learn to produce it."""
    if not new_ids:
        return 0
    params = {id(p): p for name, p in model.named_parameters() if name in EMBEDDING_ROWS}.values()  # tied: once
    for param in params:
        mask = torch.zeros(param.size(0), 1, device=param.device)  # (V, 1)
        mask[new_ids] = 1.0
        param.requires_grad_(True)
        param.register_hook(lambda grad, mask=mask: grad * mask)
    return len(new_ids) * model.shape.d_model * len(params)


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """LoRA runs: decay on the adapters, none on embedding rows (a decayed frozen row would drift)."""
    adapters = [p for n, p in model.named_parameters() if p.requires_grad and n.rsplit(".", 1)[-1] in ADAPTER_KEYS]
    rows = [p for n, p in model.named_parameters() if p.requires_grad and n.rsplit(".", 1)[-1] not in ADAPTER_KEYS]
    return [{"params": adapters, "weight_decay": weight_decay}, {"params": rows, "weight_decay": 0.0}]


def plain_weights(model: nn.Module, merge: bool) -> dict[str, torch.Tensor]:
    """What model.safetensors holds: merged weights, or (merge = false) the weights without the adapters."""
    if merge:
        return model_tensors(merge_lora(copy.deepcopy(model)))
    return {name: t for name, t in model_tensors(model).items() if name.rsplit(".", 1)[-1] not in ADAPTER_KEYS}


def write_model(model: nn.Module, spec: FinetuneSpec, out: Path, best_weights: Path | None,
                config: str | None = None) -> None:
    """model.safetensors + config.json (`config`, by default the model shape) + adapter files for LoRA runs;
    best/ holds the best validation weights, merged."""
    config = config if config is not None else spec.model.model_dump_json(indent=2)
    merge = spec.lora is None or spec.lora.merge
    save_file(plain_weights(model, merge), str(out / "model.safetensors"))
    (out / "config.json").write_text(config)
    if spec.lora is not None:
        save_file(lora_state_dict(model), str(out / "adapter.safetensors"))
        adapter = {"rank": spec.lora.rank, "alpha": spec.lora.alpha, "targets": spec.lora.targets,
                   "scale": spec.lora.alpha / spec.lora.rank, "merged": merge}
        (out / "adapter_config.json").write_text(json.dumps(adapter, indent=2))
    if best_weights is not None and best_weights.is_file():
        (out / "best").mkdir(exist_ok=True)
        best = copy.deepcopy(model)
        load_weights(best, load_file(best_weights))
        save_file(plain_weights(best, True), str(out / "best" / "model.safetensors"))
        (out / "best" / "config.json").write_text(config)


def copy_tokenizer(source: Path, out: Path) -> None:
    for name in ("tokenizer.json", "meta.json", "chat_template.jinja", "tokenizer_config.json"):
        if (source / name).is_file():
            shutil.copy(source / name, out / name)
