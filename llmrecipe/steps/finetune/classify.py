"""`finetune` with `task = "classify"`: a classification head trained on a pre-trained model.

Reads the labelled JSONL, checks its labels against the recipe before training, augments the train rows when the
dataset lists `augment` ops (llmrecipe/finetune/augment.py), trains (optionally LoRA
adapters with the head) and writes the classify artifact: model.safetensors, config.json (the model shape
plus `task`, `labels`, `pooling`), tokenizer.json + meta.json, metrics.jsonl, loss.png, best/ and, for LoRA
runs, adapter.safetensors + adapter_config.json (the head always trains in full).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from llmrecipe.errors import StepError
from llmrecipe.finetune.augment import augment, label_counts
from llmrecipe.finetune.classify_data import Fields, class_weights, encode, label_set, read_splits
from llmrecipe.models.classifier import Classifier, classifier_from_language_model
from llmrecipe.models.lora import apply_lora
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.recipe.finetune import LoraConfig
from llmrecipe.run.context import StepContext
from llmrecipe.steps.finetune.model_io import train_and_write
from llmrecipe.tokenizer.bytes import load_tokenizer
from llmrecipe.training.distributed import World
from llmrecipe.training.tasks.classify import ClassifyTask, LabelledRows


def run_classify(spec: FinetuneSpec, ctx: StepContext, world: World) -> dict[str, Any]:
    """Train and write the classify artifact (the main process writes); returns the step summary."""
    init = ctx.inputs["model"]
    tokenizer, meta = load_tokenizer(ctx.inputs["tokenizer"])
    marker = meta["eot_id"]  # the token after every pre-training document: a natural place to read a summary
    dataset = spec.dataset
    fields = Fields(dataset.text_field, dataset.label_field, dataset.split_field, f"steps.{ctx.name}.dataset")
    splits = read_splits(Path(spec.dataset_file), fields, dataset.val_fraction)
    if not splits["train"]:
        raise StepError(f"{spec.dataset_file}: no training examples (every row is held out or marked test); mark "
                        f"rows '{dataset.split_field}': 'train' or lower steps.{ctx.name}.dataset.val_fraction")
    labels = label_set(splits["train"], splits["val"] + splits["test"], spec.labels)
    ctx.log(f"{len(splits['train'])} train / {len(splits['val'])} validation examples; labels {labels}")
    augmented = None
    if dataset.augment:  # train rows only: validation and test rows stay as the file has them
        splits["train"], augmented = augment(splits["train"], dataset.augment, spec.seed, lambda e: [e.text],
                                             lambda e, texts: replace(e, text=texts[0]), lambda e: e.label)
        ctx.log(f"{augmented.sentence()}; rows per label {label_counts(splits['train'], lambda e: e.label)}")
    (train, train_cut), (val, val_cut) = (encoded(tokenizer, splits[name], labels, spec.seq_len, marker, spec.pooling)
                                          for name in ("train", "val"))
    if train_cut or val_cut:
        ctx.log(f"{train_cut} train and {val_cut} validation texts are longer than seq_len = {spec.seq_len} tokens "
                "(with the marker token): each keeps its first tokens")
    weights = class_weights(train.labels, len(labels), spec.class_weighting)
    task = ClassifyTask(train, val if len(val) else None, len(labels), weights, spec.seed, spec.batch_size,
                        spec.eval_batches, spec.micro_batch_size)
    torch.manual_seed(spec.seed)  # the head's initialization
    model = classifier_from_language_model(init, spec.init_model, labels, spec.pooling, "cpu", spec.seq_len)
    trained = adapt(model, spec.lora)
    ctx.log(f"training {trained:,} of {sum(p.numel() for p in model.parameters()):,} parameters")
    summary = train_and_write(model, task, spec, ctx, world, f"classify {len(labels)} classes",
                              config=json.dumps(model.config(), indent=2), score_start=False)
    if world.is_main:
        for name in ("tokenizer.json", "meta.json"):  # the tokenizer comes with the model
            shutil.copy(ctx.inputs["tokenizer"] / name, ctx.out_dir / name)
    return {**summary, "labels": labels, "train_examples": len(train), "val_examples": len(val),
            "trained_parameters": trained, "train_texts_cut": train_cut, "val_texts_cut": val_cut,
            **(augmented.as_metrics() if augmented else {})}


def encoded(tokenizer: Tokenizer, examples: list, labels: list[str], seq_len: int, marker: int,
            pooling: str) -> tuple[LabelledRows, int]:
    """The examples as rows and class ids; with how many texts were cut to fit `seq_len`."""
    index = {label: i for i, label in enumerate(labels)}
    rows, cut = encode(tokenizer, [e.text for e in examples], seq_len, marker, pooling)
    return LabelledRows(rows, torch.tensor([index[e.label] for e in examples], dtype=torch.long)), sum(cut)


def adapt(model: Classifier, lora: LoraConfig | None) -> int:
    """Full fine-tuning, or LoRA adapters on the backbone with the new head trainable; the trained parameter count."""
    if lora is None:
        return sum(p.numel() for p in model.parameters())
    apply_lora(model.backbone, lora)
    for param in model.score.parameters():
        param.requires_grad_(True)  # the head is new: it must learn whatever the adapters do
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
