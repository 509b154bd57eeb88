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
        if args.recipe or args.set or args.smallest:
            raise RecipeError("--report redraws a finished sweep's report: give only the sweep (and --workdir)")
        report = write_report(sweep_folder(args.report, Path(args.workdir or ".llmrecipe").resolve()))
        say(f"report: {report}")
        return 0
    if not args.recipe:
        raise RecipeError("name the recipe whose [sweep] to run, or --report SWEEP to redraw a report")
    from llmrecipe.sweep.driver import run_sweep
    from llmrecipe.sweep.prepare import prepare

    if args.smallest:
        return smallest_command(args)
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


def smallest_command(args: argparse.Namespace) -> int:
    from llmrecipe.sweep.driver import run_sweep
    from llmrecipe.sweep.prepare import prepare
    from llmrecipe.sweep.report import write_report
    from llmrecipe.sweep.smallest import SmallestSearch, parse_target, write_summary

    target = parse_target(args.smallest)
    setup = prepare(args.recipe, args.set, args.workdir, (target.metric, target.goal, f"smallest {target} by {args.by}"))
    if setup.sweep.method != "grid":
        raise RecipeError(f"--smallest searches a ladder of sizes: the sweep's trials must be a grid (sweep.method = "
                          f"\"grid\"), not {setup.sweep.method!r}")
    searches: list[SmallestSearch] = []

    def search(planned):
        searches.append(SmallestSearch.over(planned, target, args.by))
        return searches[0]

    say(f"smallest model with {target} by {args.by}: folder {setup.folder}")
    outcome = run_sweep(setup, say, search=search)
    summary = searches[0].summary(args.by)
    write_summary(outcome.folder, summary)
    report = write_report(outcome.folder)
    for line in summary["history"]:
        say(f"  {line}")
    answer = next((row for row in summary["ladder"] if row["trial"] == summary["answer"]), None)
    verdict = (f"trial {answer['trial']}, {answer['params']:,.0f} parameters: {target.metric} = {answer['measured']:.4g}"
               if answer else f"no rung of the ladder meets {target}")
    say(f"smallest: {verdict}; {summary['trials_run']} of {summary['rungs']} rungs trained; fit {summary['law']}; "
        f"report: {report}")
    return 130 if outcome.interrupted else 0
