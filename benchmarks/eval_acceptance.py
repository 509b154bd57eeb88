"""Evaluation acceptance on real data: Social IQa accuracy with intervals, and `compare` verdicts.

Trains small models on Jane Austen (../shared/data/pretrain/austen.txt) through the normal recipe path:
- random: 1 step at lr 1e-9 (the weights stay at their random initialization);
- base: STEPS steps, seed 1; seed2: the same with seed 2; long: 10 x STEPS steps, seed 1.
Each is evaluated on the val split (perplexity) and on ../shared/data/mc/social_iqa.jsonl (multiple choice).
Prints each model's accuracy with its 95% interval, then compare verdicts (seed vs seed, base vs long).
The last line is one JSON object. Usage: python benchmarks/eval_acceptance.py [STEPS] [MC_LIMIT]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from llmrecipe import api

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"

RECIPE = """
[run]
name = "eval-acceptance"
workdir = "work"

[steps.corpus]
kind = "data"
sources = [{{ path = "{austen}", unit = "paragraph" }}]
split = {{ val = 0.05, test = 0.01 }}

[steps.tok]
kind = "tokenizer"
data = "corpus"
vocab_size = 2048

[steps.base]
kind = "pretrain"
data = "corpus"
tokenizer = "tok"
model = {{ n_layer = 2, n_head = 4, d_model = 128, seq_len = 128 }}
optim = {{ lr = 3e-3, warmup = 20 }}
batch_size = 16
budget = {{ steps = 200 }}
eval_every = 1000
compile = "off"

[steps.eval]
kind = "evaluate"
model = "base"
batch_size = 32

[steps.eval.suites.val]
type = "perplexity"
split = "val"

[steps.eval.suites.siqa]
type = "multiple_choice"
data = "{social_iqa}"
{limit}
"""


def run(recipe: Path, *overrides: str) -> tuple[str, dict]:
    started = time.perf_counter()
    report = api.run(api.load(recipe, overrides))
    plan = api.compile(api.load(recipe, overrides))
    folder = api.artifact(plan, "eval")
    results = json.loads((folder / "results.json").read_text())["suites"]
    return str(report.record_dir), {"seconds": round(time.perf_counter() - started, 1), "results": results}


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    limit = int(sys.argv[2]) if len(sys.argv) > 2 else None
    root = Path(tempfile.mkdtemp(prefix="eval-acceptance-"))
    recipe = root / "recipe.toml"
    recipe.write_text(RECIPE.format(
        austen=SHARED / "pretrain" / "austen.txt", social_iqa=SHARED / "mc" / "social_iqa.jsonl",
        limit=f"limit = {limit}" if limit else "",
    ))
    variants = {
        "random": ["steps.base.budget.steps=1", "steps.base.optim.lr=1e-9", "steps.base.optim.warmup=0"],
        "base": [f"steps.base.budget.steps={steps}", "run.seed=1"],
        "seed2": [f"steps.base.budget.steps={steps}", "run.seed=2"],
        "long": [f"steps.base.budget.steps={10 * steps}", "run.seed=1"],
    }
    records, summary = {}, {}
    for name, overrides in variants.items():
        records[name], outcome = run(recipe, *overrides)
        siqa, val = outcome["results"]["siqa"], outcome["results"]["val"]
        summary[name] = {
            "seconds": outcome["seconds"],
            "val_loss": val["metrics"]["loss"],
            "siqa_accuracy": siqa["metrics"]["accuracy"], "siqa_accuracy_ci": siqa["intervals"]["accuracy"],
            "siqa_accuracy_norm": siqa["metrics"]["accuracy_norm"],
            "siqa_accuracy_norm_ci": siqa["intervals"]["accuracy_norm"],
            "siqa_chance": siqa["metrics"]["chance"], "siqa_examples": siqa["examples"],
        }
        low, high = siqa["intervals"]["accuracy"]
        print(f"{name}: val loss {val['metrics']['loss']:.4f}; social_iqa accuracy {siqa['metrics']['accuracy']:.4f} "
              f"[{low:.4f}, {high:.4f}], chance {siqa['metrics']['chance']:.4f} ({outcome['seconds']} s)", flush=True)
    verdicts = {}
    for a, b in (("base", "seed2"), ("base", "long"), ("random", "base")):
        rows = api.compare(records[a], records[b], workdir=root / "work")["rows"]
        for row in rows:
            if row["metric"] in ("loss", "accuracy"):
                key = f"{a}_vs_{b}_{row['suite']}_{row['metric']}"
                verdicts[key] = {"difference": row["difference"], "ci": [row["low"], row["high"]], "verdict": row["verdict"]}
                print(f"compare {a} vs {b}, {row['suite']} {row['metric']}: A-B {row['difference']:+.4f} "
                      f"[{row['low']:+.4f}, {row['high']:+.4f}] -> {row['verdict']}")
    print(json.dumps({"steps": steps, "models": summary, "verdicts": verdicts, "workdir": str(root)}))


if __name__ == "__main__":
    main()
