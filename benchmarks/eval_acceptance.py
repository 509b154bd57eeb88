"""Evaluation acceptance on real data: Social IQa accuracy with intervals, and (with --compare) `compare` verdicts.

Small models trained on Jane Austen (../shared/data/pretrain/austen.txt) through the normal recipe path:
- random: 1 step at lr 1e-9 (the weights stay at their random initialization): should land on chance, 1/3;
- base: STEPS steps, seed 1: a trained model;
- seed2 (the same with seed 2) and long (10 x STEPS steps, seed 1); --compare trains all four and prints compare
  verdicts (seed vs seed: no significant difference; base vs long: the longer one better).
--models picks which to train (default random,base).
Each is evaluated on the val split (perplexity) and on ../shared/data/mc/social_iqa.jsonl (multiple choice).

--reuse RECIPE STEP scores a model a recipe already trained (e.g. the sentiment recipe's pre-trained `base`) on
Social IQa too: an evaluate step is added with --set overrides and run alone, so only the scoring runs (give the
run's --workdir if it is not the recipe's own).

Runs are cached in --root (default: a new temporary folder), so a second invocation with the same root only
re-reads the results. The last line is one JSON object.

    python benchmarks/eval_acceptance.py [--steps 200] [--limit N] [--models random,base] [--compare]
                                         [--reuse RECIPE STEP --workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from llmrecipe import api

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SOCIAL_IQA = SHARED / "mc" / "social_iqa.jsonl"

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


def run(recipe: Path, overrides: list[str], step: str = "eval", workdir: str | None = None) -> tuple[str, dict]:
    """Run `step` of the recipe (and what it needs); its run record and results.json suites."""
    started = time.perf_counter()
    loaded = api.load(recipe, overrides)
    report = api.run(loaded, workdir=workdir, only=[step])
    folder = api.artifact(api.compile(loaded, workdir), step)
    results = json.loads((folder / "results.json").read_text())["suites"]
    return str(report.record_dir), {"seconds": round(time.perf_counter() - started, 1), "results": results}


def siqa_figures(name: str, outcome: dict) -> dict:
    siqa = outcome["results"]["siqa"]
    low, high = siqa["intervals"]["accuracy"]
    figures = {
        "seconds": outcome["seconds"], "siqa_examples": siqa["examples"], "siqa_chance": siqa["metrics"]["chance"],
        "siqa_accuracy": siqa["metrics"]["accuracy"], "siqa_accuracy_ci": [low, high],
        "siqa_accuracy_norm": siqa["metrics"]["accuracy_norm"], "siqa_accuracy_norm_ci": siqa["intervals"]["accuracy_norm"],
        "chance_inside_ci": low <= siqa["metrics"]["chance"] <= high,
    }
    val = outcome["results"].get("val")
    if val is not None:
        figures["val_loss"] = val["metrics"]["loss"]
    print(f"{name}: social_iqa accuracy {figures['siqa_accuracy']:.4f} [{low:.4f}, {high:.4f}] (95% CI, "
          f"{siqa['examples']} examples), chance {figures['siqa_chance']:.4f} "
          f"{'inside' if figures['chance_inside_ci'] else 'outside'} the interval"
          + (f"; val loss {figures['val_loss']:.4f}" if "val_loss" in figures else "") + f" ({outcome['seconds']} s)",
          flush=True)
    return figures


def reuse_overrides(model_step: str, limit: int | None) -> list[str]:
    """An evaluate step on an already trained model, added to its recipe from the command line."""
    prefix = "steps.siqa_eval"
    overrides = [f'{prefix}.kind="evaluate"', f'{prefix}.model="{model_step}"', f"{prefix}.batch_size=32",
                 f'{prefix}.suites.siqa.type="multiple_choice"', f'{prefix}.suites.siqa.data="{SOCIAL_IQA}"']
    return overrides + ([f"{prefix}.suites.siqa.limit={limit}"] if limit else [])


def compare_verdicts(records: dict[str, str], workdir: Path) -> dict:
    verdicts = {}
    for a, b in (("base", "seed2"), ("base", "long"), ("random", "base")):
        for row in api.compare(records[a], records[b], workdir=workdir)["rows"]:
            if row["metric"] in ("loss", "accuracy"):
                verdicts[f"{a}_vs_{b}_{row['suite']}_{row['metric']}"] = {
                    "difference": row["difference"], "ci": [row["low"], row["high"]], "verdict": row["verdict"]}
                print(f"compare {a} vs {b}, {row['suite']} {row['metric']}: A-B {row['difference']:+.4f} "
                      f"[{row['low']:+.4f}, {row['high']:+.4f}] -> {row['verdict']}", flush=True)
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps of the trained model")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N Social IQa examples")
    parser.add_argument("--models", default="random,base",
                        help="which of random, base, seed2, long to train and score (comma-separated)")
    parser.add_argument("--compare", action="store_true", help="train all four and print compare verdicts")
    parser.add_argument("--reuse", nargs=2, metavar=("RECIPE", "STEP"), help="also score this recipe's trained model")
    parser.add_argument("--workdir", default=None, help="the workdir of the --reuse recipe's run")
    parser.add_argument("--root", default=None, help="folder for this benchmark's recipe and runs (cached there)")
    args = parser.parse_args()

    root = Path(args.root or tempfile.mkdtemp(prefix="eval-acceptance-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    recipe = root / "recipe.toml"
    recipe.write_text(RECIPE.format(austen=SHARED / "pretrain" / "austen.txt", social_iqa=SOCIAL_IQA,
                                    limit=f"limit = {args.limit}" if args.limit else ""))
    variants = {
        "random": ["steps.base.budget.steps=1", "steps.base.optim.lr=1e-9", "steps.base.optim.warmup=0"],
        "base": [f"steps.base.budget.steps={args.steps}", "run.seed=1"],
        "seed2": [f"steps.base.budget.steps={args.steps}", "run.seed=2"],
        "long": [f"steps.base.budget.steps={10 * args.steps}", "run.seed=1"],
    }
    chosen = list(variants) if args.compare else [name for name in variants if name in args.models.split(",")]
    records, models = {}, {}
    for name, overrides in ((name, variants[name]) for name in chosen):
        records[name], outcome = run(recipe, overrides)
        models[name] = siqa_figures(name, outcome)
    if args.reuse:
        reused_recipe, step = args.reuse
        _, outcome = run(Path(reused_recipe), reuse_overrides(step, args.limit), "siqa_eval", args.workdir)
        models[f"reused:{step}"] = siqa_figures(f"{Path(reused_recipe).name} {step}", outcome)
    verdicts = compare_verdicts(records, root / "work") if args.compare else {}
    print(json.dumps({"steps": args.steps, "models": models, "verdicts": verdicts, "root": str(root)}))


if __name__ == "__main__":
    main()
