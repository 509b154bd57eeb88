"""The benchmark harness (`python -m benchmarks`): repeated runs, figures with median/min/max, one JSON result with
its environment, `compare`; and every benchmark's imports come from the core install or the `bench` extra."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from benchmarks.harness import compare, runner
from benchmarks.harness.suite import DATA_PACKAGES, SETTINGS, discover

REPO = Path(__file__).resolve().parent.parent

FAKE = '''"""A fake benchmark: its figures grow by one with each run (a counter file beside it)."""
import json, pathlib, sys
counter = pathlib.Path(__file__).with_suffix(".count")
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
print("some human-readable line")
print(json.dumps({"tokens_per_s": {"ours": 100 + n, "peer": 50}, "ok": True, "name": "x", "sizes": [1, 2 + n]}))
'''


def fake_suite(folder: Path) -> dict:
    (folder / "fake.py").write_text(FAKE)
    (folder / "broken.py").write_text('"""Fails."""\nimport sys\nprint("half a line")\nsys.exit("it broke")\n')
    return discover(folder)


def test_runs_repeat_and_summarise_every_figure(tmp_path):
    suite = fake_suite(tmp_path)
    assert set(suite) == {"fake", "broken"}
    result = runner.run_suite(list(suite.values()), repeat=3, echo=lambda line: None)
    fake = result["benchmarks"]["fake"]
    assert [run["ok"] for run in fake["runs"]] == [True] * 3
    assert fake["figures"]["tokens_per_s.ours"] == {"median": 101, "min": 100, "max": 102, "runs": 3}
    assert fake["figures"]["sizes.1"]["max"] == 4 and "ok" not in fake["figures"] and "name" not in fake["figures"]
    broken = result["benchmarks"]["broken"]
    assert not any(run["ok"] for run in broken["runs"]) and "it broke" in broken["runs"][0]["error"]
    environment = result["environment"]
    assert environment["cpu_cores"] >= 1 and environment["cpu"] and environment["packages"]["torch"]
    assert re.fullmatch(r"[0-9a-f]{40}", environment["git"]["commit"])
    assert len(result["load_average_before"]) == 3 and len(result["load_average_after"]) == 3

    path = runner.write(result, tmp_path / "a.json")
    later = json.loads(path.read_text())
    later["benchmarks"]["fake"]["figures"]["tokens_per_s.ours"]["median"] = 202
    lines = compare.compare(json.loads(path.read_text()), later)
    row = next(line for line in lines if line.strip().startswith("tokens_per_s.ours"))
    assert row.split()[1:4] == ["101", "202", "2.000"]
    assert any(line.startswith("commit") for line in lines)


def test_python_m_benchmarks_runs_one_tiny_benchmark_and_compares(tmp_path):
    out = tmp_path / "quick.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks", "cli_latency", "--quick", "--repeat", "1", "--out",
                          str(out)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 0, run.stderr
    result = json.loads(out.read_text())
    bench = result["benchmarks"]["cli_latency"]
    assert bench["figures"]["validate_median_s"]["runs"] == 1 and "median" in run.stdout
    assert set(bench["recipes"]["recipes/quickstart.toml"]) >= {"corpus", "tok", "base"}
    shown = subprocess.run([sys.executable, "-m", "benchmarks", "compare", str(out), str(out)], capture_output=True,
                           text=True, cwd=REPO, timeout=60)
    assert shown.returncode == 0 and "validate_median_s" in shown.stdout and "1.000" in shown.stdout


@pytest.mark.e2e
def test_the_gpu_check_runs_its_cpu_pass_and_ends_in_one_json_object(tmp_path):
    """CI has no GPU: the CPU pass keeps the script that checks a GPU ready for the next time one is at hand."""
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--out", str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result == json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["device"] == "cpu" and result["tests"].get("failed", 0) == 0
    assert {row["arch"] for row in result["throughput"]} == {"gpt2", "llama"}
    assert all(row["tokens_per_s"] > 0 and row["hf_tokens_per_s"] > 0 for row in result["throughput"])
    assert result["decode_tokens_per_s"] > 0


# --- every benchmark's peers come from the `bench` extra ------------------------------------------------------

def third_party_imports(script: Path) -> set[str]:
    tree = ast.parse(script.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {name for name in names if name not in sys.stdlib_module_names and name not in ("llmrecipe", "benchmarks")}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-") for requirement in requirements}


def distribution_of(module: str) -> str:
    """The installed distribution that provides a module; its own name when none is installed."""
    providers = metadata.packages_distributions().get(module, [module])
    return providers[0].lower().replace("_", "-")


PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
CORE = requirement_names(PROJECT["dependencies"])
BENCH = requirement_names(PROJECT["optional-dependencies"]["bench"])
BENCHMARKS = discover()


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_each_benchmark_imports_only_the_core_install_and_its_declared_peers(name):
    peers = set(SETTINGS.get(name, None).peers if name in SETTINGS else ())
    undeclared = {module for module in third_party_imports(BENCHMARKS[name].script) - peers - set(DATA_PACKAGES)
                  if distribution_of(module) not in CORE}
    assert not undeclared, f"{name} imports {undeclared}: install them from the bench extra and list them as peers"
    missing = {peer for peer in peers if distribution_of(peer) not in BENCH | CORE}
    assert not missing, f"{name}'s peers {missing} are not in pyproject.toml's bench extra"


def test_every_benchmark_is_known_to_the_harness():
    assert set(SETTINGS) <= set(BENCHMARKS), set(SETTINGS) - set(BENCHMARKS)


PEERS = sorted({peer for settings in SETTINGS.values() for peer in settings.peers})


@pytest.mark.parametrize("peer", PEERS)
def test_each_peer_imports_from_the_bench_extra(peer):
    try:
        metadata.distribution(distribution_of(peer))
    except metadata.PackageNotFoundError:
        pytest.skip(f"{peer} is not installed: pip install -e '.[bench]'")
    importlib.import_module(peer)
