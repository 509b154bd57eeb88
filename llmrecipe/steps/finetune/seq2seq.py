"""Task `seq2seq`: fine-tune an encoder-decoder text-to-text on (input, output) pairs, the loss on the output.

The model's own tokenizer (the pre-training step's, with its sentinels) encodes the pairs; end-of-text closes each
side and starts the decoder. The output folder is a model `llmrecipe generate` and the exporters read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from llmrecipe.finetune.seq2seq_data import load_pairs
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.run.context import StepContext
from llmrecipe.steps.finetune.model_io import adapt, starting_model, train_and_write
from llmrecipe.training.distributed import World
from llmrecipe.training.tasks.seq2seq import Seq2SeqTask


def run_seq2seq(spec: FinetuneSpec, ctx: StepContext, world: World) -> dict[str, Any]:
    tokenizer = Tokenizer.from_file(str(ctx.inputs["model"] / "tokenizer.json"))
    meta = json.loads((ctx.inputs["tokenizer"] / "meta.json").read_text())
    eos_id = meta["eot_id"]
    pairs, truncated = load_pairs(Path(spec.dataset_file), spec.dataset, tokenizer, eos_id, spec.seq_len)
    if truncated:
        ctx.log(f"{truncated} inputs or outputs are longer than max_seq_len = {spec.seq_len}: cut at the end")
    ctx.log(f"{len(pairs['train'])} train pairs, {len(pairs['val'])} held out")
    task = Seq2SeqTask(pairs["train"], pairs["val"], spec.seed, spec.batch_size, spec.eval_batches,
                       spec.model.decoder_start(eos_id))
    model = starting_model(spec, ctx.inputs["model"], [], 0)
    trained = adapt(model, spec, [])
    summary = train_and_write(model, task, spec, ctx, world, "seq2seq")
    if world.is_main:
        tokenizer.save(str(ctx.out_dir / "tokenizer.json"))
        vocab = tokenizer.get_vocab_size(with_added_tokens=True)
        (ctx.out_dir / "meta.json").write_text(json.dumps({**meta, "vocab_size": vocab}, indent=2) + "\n")
    return {**summary, "train_examples": len(pairs["train"]), "val_examples": len(pairs["val"]),
            "trained_parameters": trained}
