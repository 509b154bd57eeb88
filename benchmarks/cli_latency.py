"""How long `llmrecipe validate` and `llmrecipe plan` take on the quickstart recipe, as a user feels it.

Each command runs in a fresh process (interpreter start-up included), several times; prints the median
and the worst, and a final JSON line. Target: validate answers in under 1 s.

    python benchmarks/cli_latency.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "quickstart.toml"


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        for name in ("validate", "plan"):
            command = [sys.executable, "-m", "llmrecipe", name, str(RECIPE), "--workdir", workdir]
            times = [timed(command) for _ in range(args.repeat)]
            results[f"{name}_median_s"] = round(statistics.median(times), 3)
            results[f"{name}_max_s"] = round(max(times), 3)
            print(f"{name:>8}: median {statistics.median(times):.3f} s, worst {max(times):.3f} s over {args.repeat} runs")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
