"""Run the benchmarks repeatedly and keep one comparable result, or compare two results.

    python -m benchmarks [NAME ...] [--repeat 3] [--quick] [--out FILE] [--arg NAME="--flag value"]
    python -m benchmarks compare A.json B.json
    python -m benchmarks --list

Without names every benchmark runs (those needing ../shared/data fail where it is absent, and the rest go on).
Each prints its own figures; then the median, min and max of every figure over the runs, and the JSON result
(environment, load average before and after, recipe fingerprints, every run) goes to --out.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks.harness import compare, runner
from benchmarks.harness.suite import discover


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return compare_command(argv[1:])
    return run_command(argv)


def run_command(argv: list[str]) -> int:
    known = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all): {', '.join(known)}")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each benchmark (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings: checks that each benchmark runs, measures nothing worth keeping")
    parser.add_argument("--arg", action="append", default=[], metavar='NAME="ARGS"',
                        help="more arguments for one benchmark, e.g. --arg generate=\"--threads 2\" (repeatable)")
    parser.add_argument("--out", type=Path, help="result file (default: ./benchmark-<time>-<commit>.json)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one run may take (default 3600)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, benchmark in known.items():
            doc = (benchmark.script.read_text().split('"""')[1].strip().splitlines() or [""])[0]
            print(f"{name:<18} {doc}")
        return 0
    unknown = [name for name in args.names if name not in known]
    if unknown or args.repeat < 1:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(known)}" if unknown else "--repeat >= 1")
    extra: dict[str, list[str]] = {}
    for item in args.arg:
        name, sep, value = item.partition("=")
        if not sep or name not in known:
            parser.error(f"--arg {item!r}: expected NAME=ARGS with NAME one of {', '.join(known)}")
        extra.setdefault(name, []).extend(shlex.split(value))
    chosen = [known[name] for name in (args.names or known)]
    result = runner.run_suite(chosen, args.repeat, args.quick, extra, args.timeout)
    runner.print_summary(result)
    path = runner.write(result, args.out or runner.default_path(result))
    print(f"result: {path}")
    failed = [name for name, bench in result["benchmarks"].items() if not all(run["ok"] for run in bench["runs"])]
    if failed:
        print(f"failed runs in: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def compare_command(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks compare", description=compare.__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    a, b = compare.load(args.a), compare.load(args.b)
    a["path"], b["path"] = str(args.a), str(args.b)
    print("\n".join(compare.compare(a, b)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
