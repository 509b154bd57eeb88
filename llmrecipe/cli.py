"""`llmrecipe`: arguments in, printing out. Everything else happens in api.py and below.

Exit codes: 0 ok, 1 a step failed (or the workdir is busy), 2 the recipe is wrong, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmrecipe import __version__
from llmrecipe.errors import RecipeError, StepFailed, WorkdirBusy


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmrecipe", description="Build language models end to end from one TOML recipe.")
    parser.add_argument("--version", action="version", version=f"llmrecipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_recipe(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("recipe", help="the recipe TOML file")
        sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a recipe value, e.g. --set steps.base.optim.lr=3e-4 (repeatable)")
        sub.add_argument("--workdir", help="artifact store and run records (default: [run] workdir, else ./.llmrecipe)")
        return sub

    with_recipe("validate", "check a recipe without running anything")
    plan = with_recipe("plan", "show the steps, their derived values and which are cached, stale or ready")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    run = with_recipe("run", "run the recipe; cached steps are skipped, interrupted steps resume")
    run.add_argument("--only", action="append", default=[], metavar="STEP", help="run only this step and what it needs")
    run.add_argument("--force", action="append", default=[], metavar="STEP", help="run this step again even if cached")
    status = with_recipe("status", "each step's state, timings and final metrics")
    status.add_argument("--json", action="store_true", help="print machine-readable JSON")
    schema = commands.add_parser("schema", help="print the recipe JSON schema (editors use it for completion)")
    schema.add_argument("-o", "--output", help="write it to this file instead of printing it")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except RecipeError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return error.exit_code
    except StepFailed as error:
        print(f"error: {error}", file=sys.stderr)
        if error.details:
            print(f"details: {error.details}", file=sys.stderr)
        return error.exit_code
    except WorkdirBusy as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


def cmd_validate(args: argparse.Namespace) -> int:
    from llmrecipe import api

    plan = api.compile(api.load(args.recipe, args.set), args.workdir)
    implicit = sum(step.implicit for step in plan.steps)
    print(f"ok: {args.recipe} is valid ({len(plan.steps) - implicit} steps, {implicit} implicit)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from llmrecipe import api

    plan = api.compile(api.load(args.recipe, args.set), args.workdir)
    states = api.states(plan)
    if args.json:
        print(json.dumps({"plan": plan.model_dump(mode="json"), "states": states}, indent=2))
        return 0
    from rich.console import Console

    from llmrecipe.ui import plan_tables

    console = Console()
    for table in plan_tables(plan, states):
        console.print(table)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from llmrecipe import api

    from rich.console import Console

    from llmrecipe.ui import plan_tables

    loaded = api.load(args.recipe, args.set)
    plan = api.compile(loaded, args.workdir)
    console = Console(stderr=True)
    for table in plan_tables(plan, api.states(plan)):
        console.print(table)
    report = api.run(loaded, plan=plan, only=args.only, force=args.force, reporter=_reporter())
    ran = sum(o.state == "done" for o in report.outcomes)
    cached = sum(o.state == "cached" for o in report.outcomes)
    print(f"finished: {ran} steps ran, {cached} cached; run record in {report.record_dir}", file=sys.stderr)
    used = {upstream for step in plan.steps for upstream in step.inputs.values()}
    for step in plan.steps:  # the final products: steps nothing else consumes
        if step.name not in used and any(o.name == step.name and o.state != "skipped" for o in report.outcomes):
            print(f"  {step.name} ({step.kind}): {api.artifact(plan, step.name)}", file=sys.stderr)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from llmrecipe import api

    plan = api.compile(api.load(args.recipe, args.set), args.workdir)
    rows = api.status(plan)
    if args.json:
        print(json.dumps({"recipe": plan.name, "workdir": plan.workdir, "steps": rows}, indent=2))
        return 0
    from rich.console import Console

    from llmrecipe.run.record import latest_runs
    from llmrecipe.ui import status_table

    console = Console()
    console.print(status_table(rows))
    runs = latest_runs(Path(plan.workdir))
    if runs:
        console.print(f"latest run record: {runs[0]}  (report: {runs[0] / 'report.md'})")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from llmrecipe.recipe.schema import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _reporter():
    if sys.stderr.isatty():
        from rich.console import Console

        from llmrecipe.ui import RichReporter

        return RichReporter(Console(stderr=True))
    from llmrecipe.run.reporter import LineReporter

    return LineReporter(sys.stderr)


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "run": cmd_run, "status": cmd_status, "schema": cmd_schema}
