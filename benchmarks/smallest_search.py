"""`--smallest` against training every size: recipes/smallest.toml's ladder of six sizes on the quickstart's data.

Runs `llmrecipe sweep recipes/smallest.toml --smallest TARGET` in a fresh workdir, then the plain sweep of every
size in the same workdir (the sizes the search trained come from the store; the others are trained then), and
prints both answers, both trial counts, and per size the measured loss against what the fit predicted before the
search trained it and what its final fit predicts. It does not measure how often the search is right on other
ladders or targets: one ladder, one target.

    python benchmarks/smallest_search.py [--target 6.15] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "smallest.toml"
METRIC = "steps.eval.val_loss"


def sweep(workdir: Path, *extra: str) -> tuple[Path, float]:
    """Run one sweep command; its folder under runs/ and its wall time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "llmrecipe", "sweep", str(RECIPE), "--workdir", str(workdir), *extra],
                          cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"sweep failed:\n{done.stderr}")
    folders = sorted((workdir / "runs").glob("sweep-*"), key=lambda p: p.stat().st_mtime)
    return folders[-1], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=6.15, help=f"{METRIC} to reach (default 6.15)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    args = parser.parse_args()
    sets = [flag for value in args.set for flag in ("--set", value)]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        searched, search_seconds = sweep(workdir, *sets, "--smallest", f"{METRIC} <= {args.target}")
        every, every_seconds = sweep(workdir, *sets)
        summary = json.loads((searched / "smallest.json").read_text())
        trials = pl.read_parquet(every / "trials.parquet").sort("params")
    measured = dict(zip(trials["trial"].to_list(), trials["objective"].to_list()))
    meeting = [t for t, v in measured.items() if v is not None and v <= args.target]
    every_answer = meeting[0] if meeting else None
    print(f"target {METRIC} <= {args.target}; ladder of {summary['rungs']} sizes")
    print(f"{'trial':>5} {'params':>10} {'measured':>9} {'searched':>8} {'predicted before':>22} {'final fit [90%]':>24}")
    errors = []
    for row in summary["ladder"]:
        before = row["predicted_before"]
        shown_before = f"{before[0]:.3f} [{before[1]:.3f}, {before[2]:.3f}]" if before else "-"
        final = f"{row['predicted']:.3f} [{row['low']:.3f}, {row['high']:.3f}]" if row["predicted"] is not None else "-"
        truth = measured[row["trial"]]
        if not row["tried"] and row["predicted"] is not None:
            errors.append(abs(row["predicted"] - truth))
        print(f"{row['trial']:>5} {row['params']:>10,.0f} {truth:>9.3f} {'yes' if row['tried'] else 'no':>8} "
              f"{shown_before:>22} {final:>24}")
    print(f"search: trial {summary['answer']} in {summary['trials_run']} trials ({search_seconds:.0f} s); every size: "
          f"trial {every_answer} in {summary['rungs']} trials (+{every_seconds:.0f} s for the sizes the search skipped)")
    print(f"fit: {summary['law']}")
    print(json.dumps({
        "rungs": summary["rungs"], "search_trials": summary["trials_run"], "every_trials": summary["rungs"],
        "search_answer": summary["answer"], "every_answer": every_answer,
        "same_answer": summary["answer"] == every_answer, "search_seconds": round(search_seconds, 1),
        "untrained_fit_abs_error_max": round(max(errors), 4) if errors else None,
    }))


if __name__ == "__main__":
    main()
