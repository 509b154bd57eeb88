"""The run's report.md: the plan, what each step did, and its headline numbers."""

from __future__ import annotations

from llmrecipe.plan.plan import Plan
from llmrecipe.run.scheduler import StepOutcome


def render_report(plan: Plan, outcomes: list[StepOutcome], run_id: str, failure: str | None) -> str:
    lines = [f"# Run {run_id}", "", f"Recipe `{plan.name}`, seed {plan.seed}, device {plan.device}.", ""]
    if failure:
        lines += [f"**Failed:** {failure}", ""]
    lines += ["| step | kind | state | seconds | fingerprint |", "|---|---|---|---|---|"]
    by_name = {o.name: o for o in outcomes}
    for step in plan.steps:
        outcome = by_name.get(step.name)
        state = outcome.state if outcome else "not reached"
        seconds = f"{outcome.seconds:.1f}" if outcome and outcome.state == "done" else ""
        lines.append(f"| {step.name} | {step.kind} | {state} | {seconds} | `{step.fingerprint[:12]}` |")
    for outcome in outcomes:
        scalars = {k: v for k, v in outcome.metrics.items() if isinstance(v, (int, float, str))}
        if not scalars:
            continue
        lines += ["", f"## {outcome.name} ({outcome.kind})", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()]
    derived = [s for s in plan.steps if s.derived]
    for step in derived:
        lines += ["", f"## {step.name}: derived values", "", "| value | |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in step.derived.items()]
    return "\n".join(lines) + "\n"


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int) and abs(value) >= 10_000:
        return f"{value:,}"
    return str(value)
