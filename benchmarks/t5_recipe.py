"""recipes/t5.toml end to end: span-corruption pre-training, seq2seq fine-tuning on next-line prediction.

Runs the recipe (steps already in the store are reused), then reports:
- the pre-trained model's span-corruption validation loss against a unigram baseline: the cross-entropy of the same
  validation targets (sentinels, corrupted spans, end-of-text) under the target-token frequencies of training
  examples (add-one smoothing over the vocabulary);
- exact match and chrF of greedy next lines on the test plays, for the untuned (pre-trained) and the fine-tuned
  model (the recipe's two `evaluate` steps);
- each step's wall time on this machine, from the store's manifests.

    python benchmarks/t5_recipe.py                      # workdir ./.llmrecipe
    python benchmarks/t5_recipe.py --workdir /tmp/t5 --set steps.base.budget.tokens=20000

It does not measure throughput against a peer implementation. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer

from llmrecipe import api
from llmrecipe.models.shape import ModelShape
from llmrecipe.models.t5 import sentinel_token
from llmrecipe.plan.specs import PretrainSpec
from llmrecipe.training.tasks.span_corruption import SpanCorruptionTask
from llmrecipe.training.tasks.windows import TokenFile

REPO = Path(__file__).resolve().parent.parent
BASELINE_STEPS = 200
"""Training batches whose targets give the unigram frequencies."""


def unigram_baseline(plan, step: str) -> float:
    """Cross-entropy (nats per target token) of the pre-training step's validation targets under a unigram model of
    its training targets."""
    spec = PretrainSpec.model_validate(plan.step(step).spec)
    shape: ModelShape = spec.model
    tokens = api.artifact(plan, plan.step(step).inputs["tokens"])
    meta = json.loads((tokens / "meta.json").read_text())
    tokenizer = Tokenizer.from_file(str(api.artifact(plan, step) / "tokenizer.json"))
    task = SpanCorruptionTask(shape, TokenFile(tokens / "train.bin", meta["dtype"]),
                              TokenFile(tokens / "val.bin", meta["dtype"]), spec.seed, spec.batch_size,
                              spec.eval_batches, tokenizer.token_to_id(sentinel_token(0)), meta["eot_id"])
    counts = torch.ones(shape.vocab_size)  # add-one smoothing
    for index in range(BASELINE_STEPS):
        for batch in task.train_batch(index, range(spec.batch_size), spec.batch_size).micro_batches:
            counts += torch.bincount(batch["targets"].reshape(-1), minlength=shape.vocab_size).float()
    log_p = (counts / counts.sum()).log()
    targets = torch.cat([batch["targets"].reshape(-1) for batch in task.validation_batches()])
    return float(-log_p[targets].mean())


def suite_figures(plan, step: str) -> dict[str, float]:
    results = json.loads((api.artifact(plan, step) / "results.json").read_text())["suites"]
    metrics = next(iter(results.values()))["metrics"]
    return {name: round(metrics[name], 4) for name in ("exact_match", "chrf", "f1")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(REPO / "recipes" / "t5.toml"))
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()

    loaded = api.load(args.recipe, args.overrides)
    plan = api.compile(loaded, args.workdir)
    started = time.perf_counter()
    api.run(loaded, plan=plan, workdir=args.workdir)
    run_seconds = time.perf_counter() - started
    manifests = {s.name: json.loads((api.artifact(plan, s.name) / "manifest.json").read_text()) for s in plan.steps}
    pretrain = manifests["base"]["metrics"]
    baseline = unigram_baseline(plan, "base")
    figures = {
        "span_corruption_val_loss": round(pretrain["best_val_loss"], 4),
        "unigram_baseline_val_loss": round(baseline, 4),
        "span_corruption_val_perplexity": round(math.exp(pretrain["best_val_loss"]), 2),
        "unigram_baseline_perplexity": round(math.exp(baseline), 2),
        "tuned_val_loss": round(manifests["tuned"]["metrics"]["best_val_loss"], 4),
        "untuned": suite_figures(plan, "eval_base"),
        "tuned": suite_figures(plan, "eval_tuned"),
        "step_seconds": {name: round(m["seconds"], 1) for name, m in manifests.items()},
        "total_step_seconds": round(sum(m["seconds"] for m in manifests.values()), 1),
        "this_run_seconds": round(run_seconds, 1),
    }
    print(f"span corruption: val loss {figures['span_corruption_val_loss']} vs unigram "
          f"{figures['unigram_baseline_val_loss']}; next line exact match / chrF: untuned "
          f"{figures['untuned']['exact_match']} / {figures['untuned']['chrf']}, tuned "
          f"{figures['tuned']['exact_match']} / {figures['tuned']['chrf']}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
