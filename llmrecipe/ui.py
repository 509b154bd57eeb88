"""Terminal output with rich: live progress bars for `run`, tables for `plan` and `status`."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from llmrecipe.plan.plan import Plan
from llmrecipe.run.reporter import format_fields, format_seconds

STATE_STYLE = {"cached": "green", "stale": "yellow", "ready": "cyan", "done": "green", "failed": "red", "corrupt": "red",
               "partial": "magenta"}


def state_style(state: str) -> str:
    """The colour of a state; `partial (step N of M)` is coloured as `partial`."""
    return STATE_STYLE[state.split(" ", 1)[0]]


class RichProgress:
    def __init__(self, console: Console, name: str, total: int, unit: str, completed: int):
        self._bar = Progress(
            TextColumn(f"[bold]{name}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(unit),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._bar.add_task(name, total=total, completed=completed, info="")
        self._bar.start()

    def advance(self, n: int = 1, **fields: Any) -> None:
        self._bar.update(self._task, advance=n, info=format_fields(fields))

    def close(self) -> None:
        self._bar.stop()


class RichReporter:
    def __init__(self, console: Console):
        self.console = console

    def step_started(self, name: str, kind: str, resumed: bool) -> None:
        self.console.print(f"[bold]{name}[/] ({kind}) {'[yellow]resuming from checkpoint[/]' if resumed else 'running'}")

    def step_cached(self, name: str, kind: str) -> None:
        self.console.print(f"[bold]{name}[/] ({kind}) [green]cached[/], skipping")

    def step_done(self, name: str, kind: str, seconds: float, metrics: dict[str, Any]) -> None:
        headline = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        self.console.print(f"[bold]{name}[/] ({kind}) [green]done[/] in {format_seconds(seconds)}  {format_fields(headline)}")

    def step_failed(self, name: str, kind: str, message: str) -> None:
        self.console.print(f"[bold]{name}[/] ({kind}) [red]failed[/]: {message}")

    def log(self, name: str, message: str) -> None:
        self.console.print(f"  [dim]{name}:[/] {message}", highlight=False)

    def progress(self, name: str, total: int, unit: str, completed: int = 0) -> RichProgress:
        return RichProgress(self.console, name, total, unit, completed)


def plan_tables(plan: Plan, states: dict[str, str]) -> list[Table]:
    """The DAG as a table (run order), then one small table of derived values per step that has them."""
    table = Table(title=f"plan: {plan.name} (seed {plan.seed}, device {plan.device})", title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("inputs")
    table.add_column("fingerprint", no_wrap=True)
    for step in plan.steps:
        state = states[step.name]
        name = f"{step.name} [dim](implicit)[/]" if step.implicit else step.name
        inputs = ", ".join(f"{role}={up}" for role, up in step.inputs.items())
        table.add_row(name, step.kind, f"[{state_style(state)}]{state}[/]", inputs, step.fingerprint[:12])
    tables = [table]
    for step in plan.steps:
        if step.derived:
            derived = Table(title=f"{step.name}: derived values", title_justify="left", show_header=False)
            derived.add_column(no_wrap=True, min_width=max(len(key) for key in step.derived))
            derived.add_column(overflow="fold")  # a long value (the compile choice's reason) wraps, keys stay whole
            for key, value in step.derived.items():
                derived.add_row(key, _human(value))
            tables.append(derived)
    return tables


def status_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="status", title_justify="left")
    for column in ("step", "kind", "state", "seconds", "metrics"):
        table.add_column(column, overflow="fold")
    for row in rows:
        seconds = f"{row['seconds']:.1f}" if "seconds" in row else ""
        metrics = format_fields(row.get("metrics", {}))
        resumes = row.get("resumes") and not row["state"].startswith("partial")  # a partial state says so already
        state = f"{row['state']}, resumes" if resumes else row["state"]
        if row.get("drifts"):
            metrics = "; ".join(row["drifts"])
        table.add_row(row["step"], row["kind"], f"[{state_style(row['state'])}]{state}[/]", seconds, metrics)
    return table


def _human(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
            if abs(value) >= size:
                return f"{value / size:.3g}{unit}"
    return str(value)
