"""`llmrecipe sweep`: arguments in, lines out; the work is in prepare, driver and report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llmrecipe.errors import RecipeError


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def sweep_command(args: argparse.Namespace) -> int:
    from llmrecipe.sweep.report import sweep_folder, write_report

    if args.report:
        if args.recipe or args.set:
            raise RecipeError("--report redraws a finished sweep's report: give only the sweep (and --workdir)")
        report = write_report(sweep_folder(args.report, Path(args.workdir or ".llmrecipe").resolve()))
        say(f"report: {report}")
        return 0
    if not args.recipe:
        raise RecipeError("name the recipe whose [sweep] to run, or --report SWEEP to redraw a report")
    from llmrecipe.sweep.driver import run_sweep
    from llmrecipe.sweep.prepare import prepare

    setup = prepare(args.recipe, args.set, args.workdir)
    say(f"sweep {setup.sweep_id}: {setup.sweep.method}, metric {setup.metric} ({setup.sweep.goal}), "
        f"{setup.sweep.parallel} at a time on {setup.sweep.engine}; folder {setup.folder}")
    outcome = run_sweep(setup, say)
    report = write_report(outcome.folder)
    failed = sum(row["state"] != "done" for row in outcome.rows)
    say(f"finished: {outcome.ran} trials ran, {outcome.reused} from an earlier run, {failed} failed; report: {report}")
    if outcome.interrupted:
        say(f"{outcome.interrupted} trials were interrupted: run the same command to resume them")
        return 130
    return 0
