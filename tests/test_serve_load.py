"""The bounded loopback load test (benchmarks/serve_load.py): 200 concurrent requests, no 5xx, slots freed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_200_concurrent_requests_get_no_server_error_and_free_every_slot():
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "serve_load.py"), "--requests", "200"],
                            capture_output=True, text=True, cwd=REPO, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["server_errors"] == 0 and summary["statuses"] == {"200": 200}
    assert summary["busy_slots_after"] == 0 and summary["p99_s"] >= summary["p50_s"] > 0
