"""The run's report.md and report.json: the plan, timings, data accounting, loss curves, metric tables with
confidence intervals, the worst examples, and plots (PNG). Read from the store; nothing here runs a model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llmrecipe.plan.plan import Plan
from llmrecipe.run.scheduler import StepOutcome
from llmrecipe.run.store import Store
from llmrecipe.training.saved import saved_step

WORST_TEXT = 160
"""Characters of an example's text shown in the worst-examples tables."""


def write_report(record_dir: Path, plan: Plan, outcomes: list[StepOutcome], run_id: str, failure: str | None,
                 outcome: str = "finished", stop: dict[str, Any] | None = None) -> None:
    """report.json (every number) and report.md (the same, for people, with the plots) into the run record.

    `outcome` is finished, failed or interrupted; `stop` says why an interrupted run stopped (reason, exit code,
    what the step saved)."""
    store = Store(Path(plan.workdir))
    data = report_data(plan, outcomes, run_id, failure, store)
    data.update(outcome=outcome, stopped=stop)
    for step in data["steps"]:  # links relative to the report, so the record folder can be moved with the store
        plots = [*step.get("plots", []), *draw_curves(record_dir, step)]
        step["plots"] = [os.path.relpath(plot, record_dir) for plot in plots]
    (record_dir / "report.json").write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    (record_dir / "report.md").write_text(render_markdown(data, plan), encoding="utf-8")


def report_data(plan: Plan, outcomes: list[StepOutcome], run_id: str, failure: str | None, store: Store) -> dict[str, Any]:
    by_name = {o.name: o for o in outcomes}
    steps = []
    for step in plan.steps:
        outcome = by_name.get(step.name)
        folder = store.path(step.fingerprint)
        entry: dict[str, Any] = {
            "step": step.name, "kind": step.kind, "state": outcome.state if outcome else "not reached",
            "seconds": round(outcome.seconds, 3) if outcome and outcome.state == "done" else None,
            "fingerprint": step.fingerprint, "artifact": str(folder), "derived": step.derived,
            "metrics": {k: v for k, v in (outcome.metrics if outcome else {}).items() if isinstance(v, (int, float, str))},
            "note": outcome.note if outcome else None,
        }
        if store.is_done(step.fingerprint):
            entry.update(_artifact_details(step.kind, folder))
        elif outcome and outcome.state == "interrupted":
            entry["state"] = interrupted_at(step, store)
        steps.append(entry)
    return {"run_id": run_id, "recipe": plan.name, "seed": plan.seed, "device": plan.device, "failure": failure,
            "steps": steps}


def interrupted_at(step, store: Store) -> str:
    """`interrupted at step N of M` for a training step that saved a checkpoint (what the next run continues from),
    else `interrupted`."""
    saved = saved_step(store.scratch_root / step.fingerprint)
    if saved is None:
        return "interrupted"
    total = step.spec.get("total_steps")
    return f"interrupted at step {saved} of {total}" if total else f"interrupted at step {saved}"


def _artifact_details(kind: str, folder: Path) -> dict[str, Any]:
    """What a finished step's folder tells beyond its metrics: data accounting, curves, suite results."""
    if kind == "data" and (folder / "stats.json").is_file():
        return {"accounting": json.loads((folder / "stats.json").read_text())}
    if kind in ("pretrain", "finetune") and (folder / "loss.png").is_file():  # training steps draw their own curve
        return {"plots": [str(folder / "loss.png")]}
    if kind in ("pretrain", "finetune") and (folder / "metrics.jsonl").is_file():
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {"curves": {
            "train": [[r["step"], r["loss"]] for r in records if "loss" in r],
            "val": [[r["step"], r["val_loss"]] for r in records if "val_loss" in r],
        }}
    if kind == "evaluate" and (folder / "results.json").is_file():
        suites = json.loads((folder / "results.json").read_text())["suites"]
        plots = [str(folder / name) for summary in suites.values() for name in summary.get("plots", [])]
        return {"suites": suites, "plots": plots}
    return {}


def draw_curves(record_dir: Path, step: dict[str, Any]) -> list[str]:
    curves = step.get("curves")
    if not curves or not any(curves.values()):
        return []
    from llmrecipe.plots import loss_curves

    series = {name: ([p[0] for p in points], [p[1] for p in points]) for name, points in curves.items() if points}
    path = record_dir / f"{step['step']}_loss.png"
    loss_curves(series, path, f"{step['step']}: loss")
    return [str(path)]


def render_markdown(data: dict[str, Any], plan: Plan) -> str:
    lines = [f"# Run {data['run_id']}", "", f"Recipe `{data['recipe']}`, seed {data['seed']}, device {data['device']}.", ""]
    if data.get("outcome") == "interrupted":
        stopped = next((s for s in data["steps"] if s["state"].startswith("interrupted")), None)
        where = f"`{stopped['step']}` {stopped['state']}" if stopped else "interrupted"
        lines += [f"**Interrupted:** {where} ({data['failure']}); run the same command to resume.", ""]
    elif data["failure"]:
        lines += [f"**Failed:** {data['failure']}", ""]
    lines += ["| step | kind | state | seconds | fingerprint |", "|---|---|---|---|---|"]
    for step in data["steps"]:
        seconds = f"{step['seconds']:.1f}" if step["seconds"] is not None else ""
        state = step["state"] + (f" ({step['note']})" if step.get("note") else "")
        lines.append(f"| {step['step']} | {step['kind']} | {state} | {seconds} | `{step['fingerprint'][:12]}` |")
    for step in data["steps"]:
        lines += _step_section(step)
    for step in plan.steps:
        if step.derived:
            lines += ["", f"## {step.name}: derived values", "", "| value | |", "|---|---|"]
            lines += [f"| {k} | {_fmt(v)} |" for k, v in step.derived.items()]
    return "\n".join(lines) + "\n"


def _step_section(step: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    if step["metrics"] and "suites" not in step:
        lines += ["", f"## {step['step']} ({step['kind']})", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in step["metrics"].items()]
    if "accounting" in step:
        lines += _accounting(step["step"], step["accounting"])
    if "suites" in step:
        lines += ["", f"## {step['step']} (evaluate)"]
        for name, summary in step["suites"].items():
            lines += _suite_section(name, summary)
    for plot in step.get("plots", []):
        lines += ["", f"![{Path(plot).stem}]({plot})"]
    return lines


def _accounting(name: str, stats: dict[str, Any]) -> list[str]:
    lines = ["", f"### {name}: data accounting", "", "| stage | documents | characters |", "|---|---|---|"]
    for source in stats.get("sources", []):
        lines.append(f"| source {source.get('source')} ({source.get('files')} files) | {_fmt(source.get('docs'))} | "
                     f"{_fmt(source.get('chars'))} |")
    for stage in stats.get("stages", []):
        lines.append(f"| after {stage.get('stage')} | {_fmt(stage.get('docs_out'))} | {_fmt(stage.get('chars_out'))} |")
    for split, size in stats.get("splits", {}).items():
        lines.append(f"| split {split} | {_fmt(size.get('docs'))} | {_fmt(size.get('chars'))} |")
    kept = [s for s in stats.get("sources", []) if "kept_docs" in s]
    if kept:  # per source: what cleaning left of each, so a mix it reshaped is visible
        lines += ["", "| source | documents kept | share | characters kept | share |", "|---|---|---|---|---|"]
        lines += [f"| source {s['source']} | {_fmt(s['kept_docs'])} of {_fmt(s['docs'])} | {s['kept_docs_share']:.1%} | "
                  f"{_fmt(s['kept_chars'])} of {_fmt(s['chars'])} | {s['kept_chars_share']:.1%} |" for s in kept]
    return lines


def _suite_section(name: str, summary: dict[str, Any]) -> list[str]:
    lines = ["", f"### {name} ({summary['type']}, {summary['examples']} examples)", ""]
    if summary.get("note"):
        lines += [f"_{summary['note']}_", ""]
    if summary["metrics"]:
        lines += ["| metric | value | 95% CI |", "|---|---|---|"]
        for metric, number in summary["metrics"].items():
            low, high = summary["intervals"].get(metric, [None, None])
            interval = f"[{_fmt(low)}, {_fmt(high)}]" if low is not None else ""
            lines.append(f"| {metric} | {_fmt(number)} | {interval} |")
    if summary.get("extra"):
        lines += ["", " · ".join(f"{k} {_fmt(v)}" for k, v in summary["extra"].items())]
    if summary.get("worst"):
        lines += _table("Worst examples", summary["worst"])
    for title, rows in summary.get("tables", {}).items():
        lines += _table(title[:1].upper() + title[1:], rows) if rows else []
    return lines


def _table(title: str, rows: list[dict[str, Any]]) -> list[str]:
    keys = list(rows[0])
    lines = ["", f"{title}:", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]


def _cell(value: Any) -> str:
    # Integers in tables are line numbers and supports: printed plainly, since "11,646" reads as two values.
    text = value if isinstance(value, str) else str(value) if isinstance(value, int) else _fmt(value)
    text = text if len(text) <= WORST_TEXT else text[: WORST_TEXT - 1] + "…"
    return text.replace("|", "\\|").replace("\n", " ")


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)
