"""Task `sft`: teach a pre-trained decoder a chat format on prompt/response pairs or conversations.

Order of work: the tokenizer gains the template's special tokens, every example is checked and encoded
(a row that does not fit the template fails here, before any training), examples are packed, the model's
embeddings grow to the new vocabulary, and training runs. The output folder is a model that
`llmrecipe generate --chat` and the Hugging Face export use with its chat template.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Tokenizer

from llmrecipe.errors import StepError
from llmrecipe.finetune.augment import augment
from llmrecipe.finetune.chat_data import conversations, encode_conversations, user_turns, with_user_turns
from llmrecipe.finetune.fit import FitCounts
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.steps.finetune.model_io import adapt, starting_model, train_and_write
from llmrecipe.tokenizer.bytes import load_tokenizer
from llmrecipe.training.distributed import World
from llmrecipe.training.tasks.packed import PackedTask, pack


def run_sft(spec: FinetuneSpec, ctx: StepContext, world: World) -> dict[str, Any]:
    tokenizer, meta = load_tokenizer(ctx.inputs["tokenizer"])
    known = tokenizer.get_vocab_size(with_added_tokens=True)
    new_ids = add_special_tokens(tokenizer, spec.special_tokens, spec.model.vocab_size)
    path = Path(spec.dataset_file)
    splits = conversations(path, spec.dataset, f"steps.{ctx.name}.dataset")
    augmented = None
    if spec.dataset.augment:  # train rows only: validation and test rows stay as the file has them
        splits["train"], augmented = augment(splits["train"], spec.dataset.augment, spec.seed, user_turns,
                                             with_user_turns)
        ctx.log(augmented.sentence())
    examples, counts = encode_conversations(splits, path.name, tokenizer, spec.chat_template, spec.end_of_turn,
                                            spec.seq_len + 1, spec.truncation)  # +1: inputs and next token
    ctx.log(f"fitting into max_seq_len = {spec.seq_len} (truncation = {spec.truncation!r}): train "
            f"{counts['train'].sentence()}; validation {counts['val'].sentence()}")
    require_targets(counts["train"], spec)
    random.Random(spec.seed).shuffle(examples["train"])  # mixes the file's topics within each packed row
    train, val = pack(examples["train"], spec.seq_len), pack(examples["val"], spec.seq_len)
    ctx.log(f"{len(examples['train'])} train examples in {len(train)} packed rows, {len(examples['val'])} held out; "
            f"added tokens {dict(zip(spec.special_tokens, new_ids)) if new_ids else 'none (already known)'}")
    task = PackedTask(train, val if len(examples["val"]) else None, spec.seed, spec.batch_size, spec.eval_batches,
                      spec.micro_batch_size)
    model = starting_model(spec, ctx.inputs["model"], new_ids, known)
    trained = adapt(model, spec, new_ids)
    ctx.log(f"training {trained:,} of {sum(p.numel() for p in model.parameters()):,} parameters")
    summary = train_and_write(model, task, spec, ctx, world, "sft")
    if world.is_main:
        write_chat_tokenizer(tokenizer, meta, spec, ctx.out_dir)
    return {**summary, "train_examples": len(examples["train"]), "val_examples": len(examples["val"]),
            "packed_rows": len(train), "trained_parameters": trained, **counts["train"].as_metrics("train"),
            **counts["val"].as_metrics("val"), **(augmented.as_metrics() if augmented else {})}


def require_targets(counts: FitCounts, spec: FinetuneSpec) -> None:
    """Refuse to train when fewer than half the train rows keep their response: the step would learn little."""
    if 2 * counts.kept >= counts.rows:
        return
    fix = (f"raise max_seq_len (the init model allows up to {spec.init_model.seq_len})"
           if spec.seq_len < spec.init_model.seq_len else "use shorter examples or an init model with a longer seq_len")
    if spec.truncation == "drop":
        fix += ", or set truncation = \"left\" to shorten prompts instead of dropping rows"
    raise StepError(f"only {counts.kept} of {counts.rows} train rows keep a response within max_seq_len = "
                    f"{spec.seq_len} tokens ({counts.sentence()}; truncation = {spec.truncation!r}): {fix}")


def add_special_tokens(tokenizer: Tokenizer, tokens: list[str], rows: int) -> list[int]:
    """Add the template's tokens the tokenizer lacks (as special: never split, never merged); their new ids."""
    missing = [t for t in tokens if tokenizer.token_to_id(t) is None]
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    new_ids = [tokenizer.token_to_id(t) for t in missing]
    if new_ids and max(new_ids) >= rows:
        raise StepError(f"the tokenizer's new ids reach {max(new_ids)} but the model has {rows} embedding rows; "
                        "this is a bug in the plan's vocabulary bound")
    return new_ids


def write_chat_tokenizer(tokenizer: Tokenizer, meta: dict, spec: FinetuneSpec, out: Path) -> None:
    """tokenizer.json with the added tokens, meta.json, and the chat template where Hugging Face tools look."""
    tokenizer.save(str(out / "tokenizer.json"))
    end_id = tokenizer.token_to_id(spec.end_of_turn)
    (out / "meta.json").write_text(json.dumps({**meta, "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
                                               "end_of_turn_id": end_id}, indent=2) + "\n")
    (out / "chat_template.jinja").write_text(spec.chat_template, encoding="utf-8")
    eot = tokenizer.id_to_token(meta["eot_id"]) if meta.get("eot_id") is not None else None
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": spec.model.seq_len,
              "bos_token": eot, "eos_token": spec.end_of_turn, "pad_token": eot,
              "additional_special_tokens": spec.special_tokens, "clean_up_tokenization_spaces": False,
              "chat_template": spec.chat_template}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
