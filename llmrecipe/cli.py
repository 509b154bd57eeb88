"""`llmrecipe`: arguments in, printing out. Everything else happens in api.py and below.

Exit codes: 0 ok; 1 a step failed, the workdir is busy, full or read-only, or `verify` found a drifted file; 2 the
recipe is wrong; 75 `[run] max_time` was reached (run the same command again to continue); 130 interrupted by
SIGINT (Ctrl-C) and 143 by SIGTERM, the codes a shell gives a process those signals kill, after the run saved
what it could and wrote its record; 141 when the reader of the output went away (`llmrecipe status --json | head`),
the code of a process SIGPIPE ends, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from llmrecipe import __version__, preemption
from llmrecipe.errors import RecipeError, StepFailed, StorageError, WorkdirBusy


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
    run.add_argument("--wait", action="store_true",
                     help="if another run of this recipe holds the workdir, wait for it to end instead of refusing")
    run.add_argument("--verify", action="store_true",
                     help="re-hash every stored output before using it (by default only files changed since hashed)")
    status = with_recipe("status", "each step's state, timings and final metrics")
    status.add_argument("--json", action="store_true", help="print machine-readable JSON")
    add_verify_parser(commands)
    add_sweep_parser(commands)
    add_generate_parser(commands)
    add_predict_parser(commands)
    add_serve_parser(commands)
    compare = commands.add_parser(
        "compare", help="A/B: per-metric difference of two evaluations with a paired bootstrap interval and a verdict",
        description="Compare the evaluate results of two runs (run record folders, run ids or evaluate artifact "
        "folders), suite by suite, on the same examples. Name the recipe first to look run ids up in its workdir.",
        usage="llmrecipe compare [-h] [RECIPE] RUN_A RUN_B [--set KEY=VALUE] [--workdir WORKDIR] [--step STEP] "
              "[--resamples N] [--json]",
    )
    compare.add_argument("sides", nargs="+", metavar="[RECIPE] RUN",
                         help="an optional recipe (its workdir holds the runs), then the two runs")
    compare.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                         help="override a recipe value (when the workdir depends on it)")
    compare.add_argument("--workdir", help="where run ids are looked up (default: the recipe's [run] workdir, "
                                           "else ./.llmrecipe)")
    compare.add_argument("--step", help="the evaluate step to compare when a run has several")
    compare.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    compare.add_argument("--json", action="store_true", help="print machine-readable JSON")
    schema = commands.add_parser("schema", help="print the recipe JSON schema (editors use it for completion)")
    schema.add_argument("-o", "--output", help="write it to this file instead of printing it")
    return parser


def add_verify_parser(commands) -> None:
    help = "re-hash stored outputs against their manifests and name every file that drifted (exit 1 if any did)"
    sub = commands.add_parser("verify", help=help, description=help + ". With a recipe: the entries of its plan; "
                              "without: every entry in the workdir's store.")
    sub.add_argument("recipe", nargs="?", help="the recipe TOML file (default: the whole store of --workdir)")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    sub.add_argument("--workdir", help="artifact store (default: [run] workdir, else ./.llmrecipe)")
    sub.add_argument("--json", action="store_true", help="print machine-readable JSON")


def add_sweep_parser(commands) -> None:
    help = "run the trials of the recipe's [sweep] table and report them (a run again resumes)"
    sub = commands.add_parser("sweep", help=help, description=help + ". Trials share the store: steps they have in "
                              "common (data, tokenizer) run once.")
    sub.add_argument("recipe", nargs="?", help="the recipe TOML file, with a [sweep] table")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    sub.add_argument("--workdir", help="artifact store and run records (default: [run] workdir, else ./.llmrecipe)")
    sub.add_argument("--report", metavar="RUN", help="redraw the report of a sweep (its folder or sweep id) and exit")
    sub.add_argument("--smallest", metavar="TARGET",
                     help='find the smallest model of the sweep\'s grid (a ladder of sizes) that meets TARGET, e.g. '
                          '"steps.eval.val_loss <= 3.2", guided by a scaling-law fit instead of training every size')
    sub.add_argument("--by", choices=["params", "flops"], default="params",
                     help="with --smallest: order the ladder by parameters (default) or training FLOPs")


def add_model_target(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("target", metavar="RECIPE_OR_FOLDER", help="a recipe (then name STEP) or an artifact folder")
    sub.add_argument("step", nargs="?", metavar="STEP",
                     help="the recipe's pretrain, import, finetune (sft, preference, continue or seq2seq) or export "
                          "step whose model to use")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    sub.add_argument("--workdir", help="the recipe's artifact store (default: [run] workdir, else ./.llmrecipe)")
    sub.add_argument("--backend", choices=["auto", "torch", "onnx"], default="auto",
                     help="auto: torch for a pretrain or import artifact, onnxruntime for an export artifact")


def add_generate_parser(commands) -> None:
    help = "continue prompts with a trained model (KV-cache decoding)"
    sub = commands.add_parser("generate", help=help, description=help)
    add_model_target(sub)
    sub.add_argument("--prompt", action="append", required=True, help="text to continue (repeat for a batch)")
    sub.add_argument("--chat", action="store_true",
                     help="each --prompt is a user message, formatted with the model's chat template")
    sub.add_argument("--system", help="with --chat: a system message first")
    sub.add_argument("--max-tokens", type=int, default=64, help="new tokens at most (default: 64)")
    sub.add_argument("--temperature", type=float, default=0.8, help="sampling temperature (default: 0.8); 0 is greedy")
    sub.add_argument("--top-k", type=int, default=None, help="sample among the k likeliest tokens (default: all)")
    sub.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling share (default: 1.0, off)")
    sub.add_argument("--repetition-penalty", type=float, default=1.0, help="default: 1.0, off")
    sub.add_argument("--stop", action="append", default=[], help="text that ends the output (repeatable)")
    sub.add_argument("--seed", type=int, default=None,
                     help="same seed, same output; the i-th --prompt (from 0) samples with seed + i, so repeated "
                          "prompts in one batch differ (default: a fresh seed per prompt)")


def add_predict_parser(commands) -> None:
    help = "label the texts of a JSONL file with a classify fine-tune (labels and probabilities, JSONL out)"
    sub = commands.add_parser("predict", help=help, description=help + ". Each input row is written back with a "
                              "`prediction`: {label, confidence, probabilities, text_cut}.")
    sub.add_argument("target", metavar="RECIPE_OR_FOLDER", help="a recipe (then name STEP) or a classify artifact folder")
    sub.add_argument("step", nargs="?", metavar="STEP", help="the recipe's finetune step with task = \"classify\"")
    sub.add_argument("--input", required=True, help="JSONL file, one object with a text per line")
    sub.add_argument("--text-field", default="text", help="the key that holds the text (default: text)")
    sub.add_argument("--output", help="write here instead of standard output")
    sub.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default: 32)")
    sub.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe value")
    sub.add_argument("--workdir", help="the recipe's artifact store (default: [run] workdir, else ./.llmrecipe)")


def add_serve_parser(commands) -> None:
    help = ("serve a trained model over an OpenAI-compatible HTTP API (a classify fine-tune: labels at /v1/classify; "
            "an encoder such as bert: /v1/embeddings)")
    sub = commands.add_parser("serve", help=help, description=help)
    add_model_target(sub)
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    sub.add_argument("--port", type=int, default=8000)
    sub.add_argument("--api-key", help="require `Authorization: Bearer KEY` (default: $LLMRECIPE_API_KEY, else none)")
    sub.add_argument("--capacity", type=int, default=256, help="requests waiting or decoding at once; more get 429")
    sub.add_argument("--max-batch", type=int, default=8, help="requests decoded together")
    sub.add_argument("--max-request-bytes", type=int, default=1_048_576,
                     help="largest request body read; a larger one gets 413 before it is read (default: 1 MiB)")
    sub.add_argument("--log", default="serve-log.jsonl",
                     help="JSONL log of completions and feedback, readable as a recipe data source ('' for none)")
    sub.add_argument("--model-name", help="the model id clients send (default: the step or folder name)")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = COMMANDS[args.command](args)
        sys.stdout.flush()  # a reader that went away shows here, inside the handler, rather than at exit
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141
    except RecipeError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return error.exit_code
    except StepFailed as error:
        print(f"error: {error}", file=sys.stderr)
        if error.details:
            print(f"details: {error.details}", file=sys.stderr)
        return error.exit_code
    except (WorkdirBusy, StorageError) as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except preemption.Interrupted as stop:
        during = f" during step '{stop.step}'" if stop.step else ""
        print(f"interrupted: {stop}{during}; run the same command to resume", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print("interrupted: run the same command to resume", file=sys.stderr)
        return 130


def cmd_validate(args: argparse.Namespace) -> int:
    from llmrecipe import api

    plan = api.compile(api.load(args.recipe, args.set), args.workdir)
    _warn(plan)
    implicit = sum(step.implicit for step in plan.steps)
    print(f"ok: {args.recipe} is valid ({len(plan.steps) - implicit} steps, {implicit} implicit)")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from llmrecipe import api

    from llmrecipe.run.provenance import notes

    plan = api.compile(api.load(args.recipe, args.set), args.workdir)
    _warn(plan)
    states = api.states(plan)
    if args.json:
        print(json.dumps({"plan": plan.model_dump(mode="json"), "states": states, "notes": notes(plan)}, indent=2))
        return 0
    from rich.console import Console

    from llmrecipe.ui import plan_tables

    console = Console()
    for table in plan_tables(plan, states):
        console.print(table)
    for note in notes(plan):
        console.print(f"[dim]note: {note}[/]")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from llmrecipe import api

    from rich.console import Console

    from llmrecipe.ui import plan_tables

    loaded = api.load(args.recipe, args.set)
    plan = api.compile(loaded, args.workdir)
    if api.is_follower():  # a torchrun rank other than 0: it trains along with rank 0, which does the talking
        api.run(loaded, plan=plan, only=args.only, force=args.force)
        return 0
    console = Console(stderr=True)
    for table in plan_tables(plan, api.states(plan)):
        console.print(table)
    _warn(plan)
    report = api.run(loaded, plan=plan, only=args.only, force=args.force, reporter=_reporter(), wait=args.wait,
                     verify=args.verify)
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
    report = api.latest_report(plan)
    if args.json:
        print(json.dumps({"recipe": plan.name, "workdir": plan.workdir, "steps": rows,
                          "report": str(report) if report else None}, indent=2))
        return 0
    from rich.console import Console

    from llmrecipe.run.record import latest_runs
    from llmrecipe.ui import status_table

    console = Console()
    console.print(status_table(rows))
    runs = latest_runs(Path(plan.workdir))
    if runs:
        console.print(f"latest run record: {runs[0]}")
    if report:
        console.print(f"report of this recipe's latest run: {report}  (numbers: {report.with_suffix('.json')})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from llmrecipe import api
    from llmrecipe.run.verify import verify_plan, verify_store

    if args.recipe is not None:
        result = verify_plan(api.compile(api.load(args.recipe, args.set), args.workdir))
    else:
        if args.set:
            raise RecipeError("--set changes a recipe: name the recipe to verify, or drop --set to verify the whole store")
        workdir = Path(args.workdir or api.DEFAULT_WORKDIR).resolve()
        if not (workdir / "store").is_dir():
            raise RecipeError(f"--workdir {workdir}: no store there; give the workdir a recipe ran in")
        result = verify_store(workdir)
    if args.json:
        print(json.dumps({"ok": result.ok, "entries": result.entries, "files": result.files, "bytes": result.bytes,
                          "drifted": result.drifted, "not_stored": result.not_stored,
                          "unverifiable": result.unverifiable}, indent=2))
        return 0 if result.ok else 1
    for line in result.drifted:
        print(f"drifted: {line}")
    for line in result.unverifiable:
        print(f"unverifiable: {line}: its manifest lists no files (written before manifests did)")
    if result.not_stored:
        print(f"not stored yet: {', '.join(result.not_stored)}")
    verdict = "all match their manifests" if result.ok else f"{len(result.drifted)} drifted"
    print(f"verified {result.entries} entries, {result.files} files, {result.bytes:,} bytes: {verdict}")
    return 0 if result.ok else 1


def cmd_compare(args: argparse.Namespace) -> int:
    from llmrecipe import api

    sides, workdir = args.sides, args.workdir
    if len(sides) == 3 and sides[0].endswith(".toml"):
        workdir = api.workdir_of(api.load(sides[0], args.set), workdir)
        sides = sides[1:]
    if len(sides) != 2:
        raise RecipeError(f"compare takes two runs (optionally after the recipe), got {len(args.sides)} arguments: "
                          f"{' '.join(args.sides)}")
    result = api.compare(*sides, workdir=workdir, step=args.step, resamples=args.resamples)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"A: {result['a']}\nB: {result['b']}")
    if result["same_artifact"]:
        print("A and B are the same evaluation artifact (the same step with the same inputs): every difference is 0")
    for row in result["rows"]:
        if row["metric"] == "*":
            print(f"{row['suite']}: {row['verdict']}")
            continue
        better = "higher" if row["higher_is_better"] else "lower"
        print(
            f"{row['suite']} {row['metric']} ({better} is better): A {row['a']:.4g}  B {row['b']:.4g}  "
            f"A-B {row['difference']:+.4g} [95% CI {row['low']:+.4g}, {row['high']:+.4g}]  -> {row['verdict']}"
        )
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from llmrecipe.sweep import cli as sweep_cli

    return sweep_cli.sweep_command(args)


def cmd_schema(args: argparse.Namespace) -> int:
    from llmrecipe.recipe.schema import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from llmrecipe import api

    folder = api.model_folder(args.target, args.step, args.set, args.workdir)
    try:
        from llmrecipe.generate.cli import generate_to

        return generate_to(sys.stdout, api.open_model(folder, args.backend), args)
    except ValueError as error:  # a bad folder, prompt or setting, or a model without a chat template
        print(f"error: {error}", file=sys.stderr)
        return 2


def cmd_predict(args: argparse.Namespace) -> int:
    from llmrecipe import api
    from llmrecipe.errors import StepError
    from llmrecipe.models.classifier import is_classifier_artifact

    folder = api.model_folder(args.target, args.step, args.set, args.workdir)
    if not is_classifier_artifact(folder):
        raise RecipeError(f"{folder} is not a classifier: predict takes a finetune step with task = \"classify\" "
                          "(generate continues text with a language model)")
    if args.batch_size < 1:
        raise RecipeError("--batch-size must be at least 1")
    source = Path(args.input)
    if not source.is_file():
        raise RecipeError(f"--input {args.input}: no such file")
    from llmrecipe.predict import TextClassifier, predict_file

    classifier = TextClassifier(folder)
    try:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as out:
                counts = predict_file(classifier, source, args.text_field, out, args.batch_size)
        else:
            counts = predict_file(classifier, source, args.text_field, sys.stdout, args.batch_size)
    except StepError as error:
        raise RecipeError(str(error)) from None
    cut = f"; {counts['texts_cut']} longer than the context kept their beginning" if counts["texts_cut"] else ""
    print(f"predicted {counts['rows']} rows over the labels {classifier.labels}{cut}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from llmrecipe import api

    folder = api.model_folder(args.target, args.step, args.set, args.workdir)
    if args.capacity < 1 or args.max_batch < 1 or args.max_request_bytes < 1:
        print("error: --capacity, --max-batch and --max-request-bytes must be at least 1", file=sys.stderr)
        return 2
    from llmrecipe.models.classifier import is_classifier_artifact, is_encoder_artifact

    classifier = is_classifier_artifact(folder)
    if classifier or is_encoder_artifact(folder):  # models that read: /v1/classify, /v1/embeddings
        from llmrecipe.serve.server import serve_reader

        serve_reader(folder, classifier=classifier, host=args.host, port=args.port,
                     api_key=args.api_key, model_name=args.model_name or args.step or Path(args.target).name,
                     max_request_bytes=args.max_request_bytes)
        return 0
    try:
        model = api.open_model(folder, args.backend)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from llmrecipe.serve.server import serve

    serve(model, host=args.host, port=args.port, api_key=args.api_key, capacity=args.capacity,
          max_batch=args.max_batch, max_request_bytes=args.max_request_bytes,
          log_path=Path(args.log) if args.log else None,
          model_name=args.model_name or args.step or Path(args.target).name)
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail again on the closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # stdout is not a file descriptor (captured in tests)
        pass


def _warn(plan) -> None:
    for warning in plan.warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _reporter():
    if sys.stderr.isatty():
        from rich.console import Console

        from llmrecipe.ui import RichReporter

        return RichReporter(Console(stderr=True))
    from llmrecipe.run.reporter import LineReporter

    return LineReporter(sys.stderr)


COMMANDS = {"validate": cmd_validate, "plan": cmd_plan, "run": cmd_run, "status": cmd_status, "verify": cmd_verify,
            "compare": cmd_compare, "sweep": cmd_sweep, "schema": cmd_schema, "generate": cmd_generate,
            "predict": cmd_predict, "serve": cmd_serve}
