"""The `tokenizer` step: train a lossless tokenizer on a data step's train split.

Outputs: `tokenizer.json` (Hugging Face format) and `meta.json` = {"type", "vocab_size", "eot_id"}, where
vocab_size is the actual number of ids (never more than the declared one, from which the model is sized).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmrecipe.errors import StepError
from llmrecipe.plan.specs import TokenizerSpec
from llmrecipe.run.context import StepContext
from llmrecipe.steps.tokenize import BATCH_DOCUMENTS, count_documents, split_path, text_batches
from llmrecipe.tokenizer.train import train_bpe, train_char

TRAINERS = {"bpe": train_bpe, "char": train_char}


def run(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    tokenizer_spec = TokenizerSpec.model_validate(spec)
    train_path = split_path(ctx.inputs["data"], "train")
    documents = count_documents(train_path)
    if documents == 0:
        raise StepError("the data step's train split is empty, so there is nothing to train a tokenizer on; "
                        "add sources or lower the data step's val/test fractions")
    try:
        tokenizer = TRAINERS[tokenizer_spec.type](
            train_texts(train_path),
            vocab_size=tokenizer_spec.vocab_size,
            min_frequency=tokenizer_spec.min_frequency,
            eot_token=tokenizer_spec.eot_token,
        )
    except ValueError as error:
        raise StepError(str(error)) from error
    meta = {
        "type": tokenizer_spec.type,
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "eot_id": tokenizer.token_to_id(tokenizer_spec.eot_token),
    }
    tokenizer.save(str(ctx.out_dir / "tokenizer.json"))
    (ctx.out_dir / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    ctx.log(f"{meta['type']} tokenizer: {meta['vocab_size']} ids (at most {tokenizer_spec.vocab_size}) "
            f"from {documents} documents, eot id {meta['eot_id']}")
    return {"vocab_size": meta["vocab_size"], "type": meta["type"]}


def train_texts(path: Path) -> Iterator[str]:
    """The train split's texts one by one, read a batch at a time."""
    for texts in text_batches(path, BATCH_DOCUMENTS):
        yield from texts
