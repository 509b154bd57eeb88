"""Run benchmarks, each as many times as asked, and keep every figure with its median, min and max.

Each run is a fresh process (`python benchmarks/NAME.py ARGS`) with the checkout first on the path. Its figures
are the numbers in the JSON object on its last output line, flattened to dotted names (`tokens_per_s.torch`);
booleans and strings stay in the raw result. A run that fails (non-zero exit, no JSON) is kept with its error and
the rest go on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.harness.environment import environment, load_average
from benchmarks.harness.suite import REPO, Benchmark

RESULT_FORMAT = 1


def run_suite(benchmarks: list[Benchmark], repeat: int, quick: bool = False, extra: dict[str, list[str]] | None = None,
              timeout: float = 3600, echo=print) -> dict[str, Any]:
    """The whole result: environment, load before and after, and per benchmark its runs and figures."""
    extra = extra or {}
    result: dict[str, Any] = {
        "format": RESULT_FORMAT, "created": dt.datetime.now().isoformat(timespec="seconds"),
        "repeat": repeat, "quick": quick, "environment": environment(REPO), "load_average_before": load_average(),
        "benchmarks": {},
    }
    for benchmark in benchmarks:
        args = [*(benchmark.settings.quick if quick else ()), *extra.get(benchmark.name, [])]
        runs = []
        for index in range(repeat):
            echo(f"[{benchmark.name}] run {index + 1}/{repeat}: {' '.join(args) or '(defaults)'}")
            runs.append(run_once(benchmark, args, timeout))
            echo(f"[{benchmark.name}] {describe(runs[-1])}")
        result["benchmarks"][benchmark.name] = {
            "args": args, "runs": runs, "figures": summarise([run["figures"] for run in runs if run["ok"]]),
            "recipes": recipe_fingerprints(benchmark.settings.recipes), "needs": benchmark.settings.needs,
        }
    result["load_average_after"] = load_average()
    return result


def run_once(benchmark: Benchmark, args: list[str], timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    load_before, started = load_average(), time.perf_counter()
    try:
        done = subprocess.run([sys.executable, str(benchmark.script), *args], capture_output=True, text=True, cwd=REPO,
                              env=env, timeout=timeout)
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as expired:
        code, stdout, stderr = None, expired.stdout or "", f"timed out after {timeout} s"
        stdout = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout
    run = {"seconds": round(time.perf_counter() - started, 2), "returncode": code,
           "load_average": [load_before[0], load_average()[0]], "ok": False, "figures": {}, "result": None,
           "output": tail(stdout, 20)}
    last = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    try:
        run["result"] = json.loads(last)
    except json.JSONDecodeError:
        run["error"] = "its last output line is not a JSON object; " + (tail(stderr, 10) or "no error output")
        return run
    run["figures"] = figures(run["result"])
    run["ok"] = code == 0 and isinstance(run["result"], dict)
    if not run["ok"]:
        run["error"] = tail(stderr, 10) or f"exit status {code}"
    return run


def figures(value: Any, prefix: str = "") -> dict[str, float]:
    """Every number in a JSON value, by its dotted path."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return {}
    if isinstance(value, (int, float)):
        return {prefix: value}
    items = value.items() if isinstance(value, dict) else enumerate(value)
    found: dict[str, float] = {}
    for key, item in items:
        found.update(figures(item, f"{prefix}.{key}" if prefix else str(key)))
    return found


def summarise(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Median, min and max of each figure over the runs that gave it."""
    names = sorted({name for run in runs for name in run})
    summary = {}
    for name in names:
        values = [run[name] for run in runs if name in run]
        summary[name] = {"median": statistics.median(values), "min": min(values), "max": max(values),
                         "runs": len(values)}
    return summary


def recipe_fingerprints(recipes: tuple[str, ...]) -> dict[str, Any]:
    """Each recipe's steps and their fingerprints (or why the recipe does not compile here)."""
    if not recipes:
        return {}
    import tempfile

    from llmrecipe import api
    from llmrecipe.errors import RecipeError

    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for recipe in recipes:
            try:
                plan = api.compile(api.load(REPO / recipe), workdir)
                found[recipe] = {step.name: step.fingerprint for step in plan.steps}
            except RecipeError as error:
                found[recipe] = {"error": str(error)}
    return found


def describe(run: dict[str, Any]) -> str:
    if not run["ok"]:
        return f"FAILED after {run['seconds']} s: {run.get('error', '')[-300:]}"
    return f"{len(run['figures'])} figures in {run['seconds']} s"


def tail(text: str, lines: int) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def print_summary(result: dict[str, Any], echo=print) -> None:
    for name, bench in result["benchmarks"].items():
        ok = sum(run["ok"] for run in bench["runs"])
        echo(f"\n{name}: {ok}/{len(bench['runs'])} runs ok" + (f" (needs {bench['needs']})" if bench["needs"] else ""))
        width = max((len(f) for f in bench["figures"]), default=0)
        for figure, stats in bench["figures"].items():
            echo(f"  {figure:<{width}}  median {stats['median']:>12.6g}  min {stats['min']:>12.6g}  "
                 f"max {stats['max']:>12.6g}")
    echo(f"\nload average {result['load_average_before'][0]} -> {result['load_average_after'][0]}; "
         f"commit {(result['environment']['git']['commit'] or '?')[:12]}")


def write(result: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return path


def default_path(result: dict[str, Any]) -> Path:
    stamp = result["created"].replace(":", "").replace("-", "")
    commit = (result["environment"]["git"]["commit"] or "nogit")[:8]
    return Path(f"benchmark-{stamp}-{commit}.json")
