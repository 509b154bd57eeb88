"""`finetune` with `task = "classify"`: a classification head trained on a pre-trained model.

Reads the labelled JSONL, checks its labels against the recipe before training, trains (optionally LoRA
adapters with the head) and writes the classify artifact: model.safetensors, config.json (the model shape
plus `task`, `labels`, `pooling`), tokenizer.json + meta.json, metrics.jsonl, loss.png, best/ and, for LoRA
runs, adapter.safetensors + adapter_config.json (the head always trains in full).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from llmrecipe.errors import StepError
from llmrecipe.finetune.classify_data import Fields, class_weights, encode, label_set, read_splits
from llmrecipe.finetune.classify_model import Classifier, classifier_from_language_model
from llmrecipe.finetune.classify_train import EncodedSplit, total_steps, train_classifier
from llmrecipe.finetune.lora import apply_lora
from llmrecipe.finetune.model_io import write_model
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.recipe.finetune import LoraConfig
from llmrecipe.run.context import StepContext
from llmrecipe.tokenizer.bytes import load_tokenizer
from llmrecipe.training.distributed import World
from llmrecipe.training.metrics import write_training_outputs


def run_classify(spec: FinetuneSpec, ctx: StepContext, world: World = World()) -> dict[str, Any]:
    """Train and write the classify artifact (the main process writes); returns the step summary."""
    init = ctx.inputs["model"]
    tokenizer, meta = load_tokenizer(ctx.inputs["tokenizer"])
    marker = meta["eot_id"]  # the token after every pre-training document: a natural place to read a summary
    dataset = spec.dataset
    splits = read_splits(Path(spec.dataset_file), Fields(dataset.text_field, dataset.label_field, dataset.split_field),
                         dataset.val_fraction)
    if not splits["train"]:
        raise StepError(f"{spec.dataset_file}: no training examples (every row is held out or marked test); mark "
                        f"rows '{dataset.split_field}': 'train' or lower dataset.val_fraction")
    labels = label_set(splits["train"], splits["val"] + splits["test"], spec.labels)
    ctx.log(f"{len(splits['train'])} train / {len(splits['val'])} validation examples; labels {labels}")
    seq_len = spec.seq_len
    train, val = (encoded(tokenizer, splits[name], labels, seq_len, marker, spec.pooling) for name in ("train", "val"))
    steps = total_steps(spec, train)
    if spec.optim.warmup >= steps:
        raise StepError(f"the budget gives {steps} steps, not more than optim.warmup = {spec.optim.warmup}; lower the "
                        "warmup or raise the budget")
    torch.manual_seed(spec.seed)  # the head's initialization
    model = classifier_from_language_model(init, spec.init_model, labels, spec.pooling, spec.device, seq_len)
    trained = adapt(model, spec.lora)
    ctx.log(f"training {trained:,} of {sum(p.numel() for p in model.parameters()):,} parameters")
    weights = class_weights(train.labels, len(labels), spec.class_weighting)
    summary = train_classifier(model, train, val if len(val) else None, spec, steps, weights, ctx, world)
    records = summary.pop("metrics_records")
    if world.is_main:
        write_outputs(model, spec, ctx, records, summary)
    return {**summary, "labels": labels, "train_examples": len(train), "val_examples": len(val),
            "trained_parameters": trained}


def encoded(tokenizer: Tokenizer, examples: list, labels: list[str], seq_len: int, marker: int, pooling: str) -> EncodedSplit:
    index = {label: i for i, label in enumerate(labels)}
    rows = encode(tokenizer, [e.text for e in examples], seq_len, marker, pooling)
    return EncodedSplit(rows, torch.tensor([index[e.label] for e in examples], dtype=torch.long))


def adapt(model: Classifier, lora: LoraConfig | None) -> int:
    """Full fine-tuning, or LoRA adapters on the backbone with the new head trainable; the trained parameter count."""
    if lora is None:
        return sum(p.numel() for p in model.parameters())
    apply_lora(model.backbone, lora)
    for param in model.score.parameters():
        param.requires_grad_(True)  # the head is new: it must learn whatever the adapters do
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def write_outputs(model: Classifier, spec: FinetuneSpec, ctx: StepContext, records: list, summary: dict) -> None:
    out = ctx.out_dir
    write_model(model, spec, out, ctx.scratch_dir / "best" / "model.safetensors",
                config=json.dumps(model.config(), indent=2))  # the classifier's config: task, labels, pooling
    for name in ("tokenizer.json", "meta.json"):  # the tokenizer comes with the model
        shutil.copy(ctx.inputs["tokenizer"] / name, out / name)
    write_training_outputs(records, ctx.scratch_dir, out,
                           f"{ctx.name}: classify {len(model.labels)} classes, {summary['steps']} steps")
