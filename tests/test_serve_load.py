"""The bounded loopback load tests: 200 concurrent requests (benchmarks/serve_load.py), and hostile requests beside
normal traffic (benchmarks/serve_hostile.py): no 5xx, every slot freed, memory bounded, /health within a second."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e  # whole recipes, processes or servers: not in the inner loop

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_200_concurrent_requests_get_no_server_error_and_free_every_slot():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--requests", "200"],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["server_errors"] == 0 and summary["statuses"] == {"200": 200}
    assert summary["busy_slots_after"] == 0 and summary["p99_s"] >= summary["p50_s"] > 0


def run_hostile(seconds: float) -> dict:
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_hostile.py"), "--seconds", str(seconds)],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def check_hostile(summary: dict) -> None:
    assert summary["unexpected"] == {} and summary["server_errors"] == 0, summary["results"]
    assert summary["results"]["normal"] == {"200": sum(summary["results"]["normal"].values())}
    assert summary["health_max_s"] < 1.0 and summary["health_failures"] == 0
    assert summary["rss_growth_mb"] <= summary["max_growth_mb"] and summary["busy_slots_after"] == 0
    assert summary["passed"]


def test_hostile_requests_beside_normal_traffic_quick():
    """One or two waves: 10 MB prompts, undelivered 100 MB bodies, 1M-character stops, keyless uploads, hang-ups."""
    check_hostile(run_hostile(3))


@pytest.mark.slow
def test_hostile_requests_beside_normal_traffic_for_a_minute():
    summary = run_hostile(60)
    check_hostile(summary)
    assert summary["requests"] >= 200
