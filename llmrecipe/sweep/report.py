"""A sweep's report.md, drawn from its trials.parquet and sweep.json (so `llmrecipe sweep --report RUN` redraws it
without the recipe): the trials sorted by the metric, the best trial's recipe as a file, and the plots."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from llmrecipe.errors import RecipeError
from llmrecipe.sweep.best import best_recipe_path, write_best_recipe
from llmrecipe.sweep.record import FINGERPRINT, SET
from llmrecipe.sweep.toml import toml_value


def sweep_folder(target: str | Path, workdir: Path) -> Path:
    """A sweep folder, or a sweep id under `<workdir>/runs`."""
    path = Path(target)
    if not path.is_dir() and (workdir / "runs" / str(target)).is_dir():
        path = workdir / "runs" / str(target)
    if not (path / "sweep.json").is_file() or not (path / "trials.parquet").is_file():
        raise RecipeError(f"--report {target}: not a sweep folder (one holding sweep.json and trials.parquet), nor a "
                          f"sweep id under {workdir / 'runs'}")
    return path


def load_trials(folder: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import polars as pl

    return json.loads((folder / "sweep.json").read_text()), pl.read_parquet(folder / "trials.parquet").to_dicts()


def write_report(folder: Path) -> Path:
    info, rows = load_trials(folder)
    goal, metric = info["goal"], info["metric"]
    done = [r for r in rows if r["state"] == "done" and r["objective"] is not None]
    ranked = sorted(done, key=lambda r: r["objective"] if goal == "min" else -r["objective"])
    best = ranked[0] if ranked else None
    keys = [c[len(SET):] for c in rows[0] if c.startswith(SET)] if rows else []
    plots = _plots(folder, info, rows, keys, best)
    lines = [f"# Sweep {info['sweep_id']}", "",
             f"Recipe `{info['recipe_file']}`" + (f" with {' '.join('--set ' + o for o in info['overrides'])}"
                                                  if info["overrides"] else "") +
             f"; {info['method']} over {len(keys)} keys, seed {info['seed']}; {len(rows)} trials: {len(done)} done, "
             f"{sum(r['state'] == 'pruned' for r in rows)} pruned, {sum(r['state'] == 'failed' for r in rows)} failed. Metric `{metric}` ({'lower' if goal == 'min' else 'higher'} is "
             f"better). Outcome: {info['outcome']}.", ""]
    if best is not None:
        lines += _best_section(info, best, keys)
    if (folder / "smallest.json").is_file():
        lines += _smallest_section(folder, json.loads((folder / "smallest.json").read_text()))
    lines += ["## Trials, best first", "", _table(ranked + [r for r in rows if r not in done], keys, metric)]
    failed = [r for r in rows if r["state"] != "done"]
    if failed:
        lines += ["", "## Failed and pruned trials", ""] + [f"- trial {r['trial']}: {r['error']}" for r in failed]
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    environment = info["environment"]
    lines += ["", "## Environment", "", f"{environment['cpu_model']} ({environment['cpu_count']} cores), "
              f"GPUs: {', '.join(environment['gpu_models']) or 'none'}; Python {environment['python']}; "
              + ", ".join(f"{k} {v}" for k, v in environment["packages"].items())
              + (f"; recipe at commit {info['git']['commit'][:12]}" if info.get("git") else "")
              + ". Every trial's fingerprints are in trials.parquet; sweep.json holds the rest."]
    path = folder / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _best_section(info: dict[str, Any], best: dict[str, Any], keys: list[str]) -> list[str]:
    sets = [f"{key}={toml_value(best[SET + key])}" for key in keys]
    recipe = Path(info["recipe_file"])
    header = (f"The best trial ({best['trial']}) of sweep {info['sweep_id']}: {info['metric']} = {best['objective']:.6g}.\n"
              f"{recipe.name} with: {' '.join(sets)}\nRun it: llmrecipe run {best_recipe_path(recipe)}")
    path = write_best_recipe(recipe, [*info["overrides"], *sets, f"run.name={toml_value(best['name'])}"],
                             Path(info["workdir"]), header)
    command = " ".join(["llmrecipe run", info["recipe_file"], *(f"--set '{s}'" for s in [*info["overrides"], *sets])])
    return ["## Best trial", "", f"Trial {best['trial']}: `{info['metric']}` = {best['objective']:.6g} with "
            + ", ".join(f"`{k}` = {toml_value(best[SET + k])}" for k in keys) + ".", "",
            f"Its recipe, to run or build on: `{path}` (beside the sweep's recipe, whose relative paths it shares; "
            "its steps are in the store already), or:", "", f"    {command}", ""]


def _smallest_section(folder: Path, summary: dict[str, Any]) -> list[str]:
    from llmrecipe.sweep.plots import scaling_fit

    answer = next((row for row in summary["ladder"] if row["trial"] == summary["answer"]), None)
    verdict = (f"trial {answer['trial']} ({answer['params']:,.0f} parameters) is the smallest that meets it: "
               f"measured {_fmt(answer['measured'])}" if answer else "no rung of the ladder meets it")
    lines = ["## Smallest model", "", f"Target `{summary['target']}`, ladder of {summary['rungs']} sizes ordered by "
             f"{summary['by']}: {verdict}. {summary['trials_run']} of the {summary['rungs']} sizes were trained.", "",
             f"Scaling-law fit to the trained sizes: `{summary['law'] or 'too few points to fit'}` (90% bootstrap "
             "interval in brackets).", "", "| trial | params | train tokens | measured | fit [90%] | predicted before training |",
             "|---|---|---|---|---|---|"]
    for row in summary["ladder"]:
        interval = f"{_fmt(row['predicted'])} [{_fmt(row['low'])}, {_fmt(row['high'])}]" if row["predicted"] is not None else ""
        before = (f"{_fmt(row['predicted_before'][0])} [{_fmt(row['predicted_before'][1])}, "
                  f"{_fmt(row['predicted_before'][2])}]" if row["predicted_before"] else "")
        lines.append(f"| {row['trial']} | {row['params']:,.0f} | {row['train_tokens']:,.0f} | "
                     f"{_fmt(row['measured']) if row['tried'] else 'not trained'} | {interval} | {before} |")
    lines += ["", "How it chose:", ""] + [f"- {line}" for line in summary["history"]]
    plot = scaling_fit(summary, folder / "scaling_fit.png")
    return lines + ["", f"![scaling_fit]({plot.name})", ""]


def _table(rows: list[dict[str, Any]], keys: list[str], metric: str) -> str:
    head = ["trial", *keys, metric, "params", "train FLOPs", "seconds", "state"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["trial"]), *(_fmt(row[SET + k]) for k in keys), _fmt(row["objective"]), _fmt(row["params"]),
                 _fmt(row["train_flops"]), _fmt(row["seconds"]), row["state"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:.3g}" if abs(value) >= 10**9 else f"{value:,}"
    return str(value)


def _plots(folder: Path, info: dict[str, Any], rows: list[dict[str, Any]], keys: list[str],
           best: dict[str, Any] | None) -> list[Path]:
    from llmrecipe.plots import loss_curves
    from llmrecipe.sweep.plots import metric_against, metric_against_cost

    done = [r for r in rows if r["state"] == "done" and r["objective"] is not None]
    if not done:
        return []
    metric, plots = info["metric"], []
    for key in keys:
        points = [(r[SET + key], r["objective"], r is best) for r in done]
        plots.append(metric_against(points, folder / f"metric_vs_{_slug(key)}.png", key, metric))
    curves = _curves(Path(info["workdir"]), info.get("model_step"), done, keys)
    if curves:
        plots.append(loss_curves(curves, folder / "validation_curves.png", f"{info['model_step']}: every trial",
                                ylabel="validation loss (nats per token)"))
    for column, label in (("params", "parameters"), ("train_flops", "training FLOPs")):
        points = [(float(r[column]), r["objective"]) for r in done if r[column]]
        if len({p[0] for p in points}) > 1:
            plots.append(metric_against_cost(points, folder / f"metric_vs_{column}.png", label, metric, info["goal"]))
    return plots


def _curves(workdir: Path, model_step: str | None, rows: list[dict[str, Any]],
            keys: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """Validation loss per step of each trial's model, from the metrics.jsonl of its training step in the store."""
    curves = {}
    for row in rows:
        fingerprint = row.get(FINGERPRINT + model_step) if model_step else None
        path = workdir / "store" / str(fingerprint) / "metrics.jsonl"
        if not fingerprint or not path.is_file():
            continue
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        points = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
        if points:
            label = f"{row['trial']}: " + ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(row[SET + k])}" for k in keys)
            curves[label] = ([p[0] for p in points], [p[1] for p in points])
    return curves


def _slug(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)
