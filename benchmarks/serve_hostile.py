"""Load test of the server under hostile requests beside normal traffic, loopback only and bounded.

`llmrecipe serve` runs in its own process (with an API key and the default 1 MiB body limit) on a small random
LLaMA-style model, so its memory is its own: resident memory is sampled every 20 ms and its peak (VmHWM) read at
the end. For `--seconds`, normal clients send completions (a tenth streamed) while hostile ones send, in waves:
10 MB prompts, bodies that declare 100 MB and never send them, chunked uploads of 20 MB without a length,
prompts just under the body limit (far past the context), 1-million-character stop texts, 257-character ones,
unauthenticated 10 MB bodies, and clients that hang up on non-streamed requests. A thread asks `/health` every
100 ms throughout.

Targets: every normal request answered 200, every hostile one refused with its 4xx, no 5xx; `/health` always
within 1 s; the server's peak memory at most `--max-growth-mb` above its resident memory after warm-up; no
busy slot left at the end. The last line is one JSON object. Not measured: throughput under load (see
serve_load.py), TLS, many machines, or the operating system's own limits on connections.

    python benchmarks/serve_hostile.py [--seconds 20] [--max-growth-mb 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import httpx  # noqa: E402

from benchmarks.serve_load import TEXT, model_folder  # noqa: E402
from llmrecipe.serve.server import free_port  # noqa: E402

KEY = "bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "bench", "prompt": TEXT[0], "max_tokens": 16, "temperature": 0.8}
CLOSED = "connection closed"
EXPECTED = {"normal": {200}, "stream": {200}, "prompt_10mb": {413, CLOSED}, "declared_100mb": {413},
            "chunked_20mb": {413, CLOSED}, "prompt_under_limit": {400}, "stop_1m_chars": {400},
            "stop_257_chars": {400}, "no_key_10mb": {401, CLOSED}, "hang_up": {"hung up", "answered"}}
"""What each kind of request must get: its status; for a client that hangs up, nothing, unless its sample ended
(end of text) inside the 50 ms it waited, which is an answer and not a fault. The server answers an oversized upload
at its head and closes the connection without reading the rest, so a client still sending may see the connection
close before it reads the answer."""


def start_server(folder: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "llmrecipe", "serve", str(folder), "--port", str(port), "--api-key", KEY,
               "--log", "", "--model-name", "bench", "--capacity", "256", "--max-batch", "8"]
    # Its log goes to a file: a pipe nobody reads fills up (uvicorn logs every request) and then blocks the server.
    log = open(folder / "server.log", "w+b")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {(folder / 'server.log').read_bytes().decode()[-2000:]}")
    server.kill()
    raise RuntimeError("the server did not answer /health within 120 s")


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Watch(threading.Thread):
    """Samples the server's resident memory and `/health`'s answer time until stopped."""

    def __init__(self, url: str, pid: int):
        super().__init__(daemon=True)
        self.url, self.pid = url, pid
        self.stopped = threading.Event()
        self.rss_kb: list[int] = []
        self.health_s: list[float] = []
        self.health_failures = 0

    def run(self) -> None:
        last_health = 0.0
        with httpx.Client(timeout=10) as client:
            while not self.stopped.is_set():
                self.rss_kb.append(memory_kb(self.pid, "VmRSS"))
                if time.monotonic() - last_health >= 0.1:
                    last_health = time.monotonic()
                    try:
                        started = time.perf_counter()
                        ok = client.get(f"{self.url}/health").status_code == 200
                        self.health_s.append(time.perf_counter() - started)
                        self.health_failures += not ok
                    except httpx.HTTPError:
                        self.health_failures += 1
                time.sleep(0.02)


async def declared_but_never_sent(port: int) -> str:
    """A head that promises 100 MB; the answer must come without any of it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
                 "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n".encode())
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), timeout=30)
    writer.close()
    return line.split()[1].decode() if line else "no answer"


async def chunked(client: httpx.AsyncClient, megabytes: int) -> int:
    async def chunks():
        yield b'{"model": "bench", "prompt": "'
        for _ in range(megabytes):
            yield b"x" * 1_000_000
        yield b'"}'

    try:
        response = await client.post("/v1/completions", content=chunks(), headers={**AUTH, "content-type":
                                                                                   "application/json"})
        return response.status_code
    except httpx.HTTPError:
        return CLOSED


async def hang_up(client: httpx.AsyncClient) -> str:
    try:
        await client.post("/v1/completions", json={**BODY, "max_tokens": 100}, headers=AUTH, timeout=0.05)
    except httpx.TimeoutException:
        return "hung up"
    return "answered"


async def one(kind: str, client: httpx.AsyncClient, port: int, payloads: dict[str, bytes]):
    started = time.perf_counter()
    if kind == "declared_100mb":
        result = await declared_but_never_sent(port)
    elif kind == "chunked_20mb":
        result = await chunked(client, 20)
    elif kind == "hang_up":
        result = await hang_up(client)
    elif kind == "stream":
        async with client.stream("POST", "/v1/completions", json={**BODY, "stream": True}, headers=AUTH) as response:
            async for _ in response.aiter_lines():
                pass
            result = response.status_code
    else:
        headers = {"content-type": "application/json", **({} if kind == "no_key_10mb" else AUTH)}
        try:
            result = (await client.post("/v1/completions", content=payloads[kind], headers=headers)).status_code
        except httpx.HTTPError:
            result = CLOSED
    return kind, str(result), time.perf_counter() - started


def payloads() -> dict[str, bytes]:
    encode = lambda body: json.dumps(body).encode()
    return {
        "normal": encode(BODY),
        "prompt_10mb": encode({**BODY, "prompt": "To be, or not to be. " * 500_000}),
        "prompt_under_limit": encode({**BODY, "prompt": "a" * 1_000_000}),
        "stop_1m_chars": encode({**BODY, "stop": "s" * 1_000_000}),
        "stop_257_chars": encode({**BODY, "stop": ["s" * 257]}),
        "no_key_10mb": encode({**BODY, "prompt": "x" * 10_000_000}),
    }


async def traffic(url: str, port: int, seconds: float) -> list[tuple[str, str, float]]:
    bodies = payloads()
    hostile = ["prompt_10mb", "declared_100mb", "chunked_20mb", "prompt_under_limit", "stop_1m_chars",
               "stop_257_chars", "no_key_10mb", "hang_up"]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
    results: list[tuple[str, str, float]] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        deadline, wave = time.monotonic() + seconds, 0
        while time.monotonic() < deadline:
            kinds = ["normal"] * 9 + ["stream"] + hostile  # each wave: 10 normal requests beside 8 hostile ones
            results += await asyncio.gather(*(one(kind, client, port, bodies) for kind in kinds))
            wave += 1
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the mixed traffic lasts")
    parser.add_argument("--max-growth-mb", type=float, default=300.0,
                        help="target: peak resident memory at most this much above the warmed-up server's")
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as root:
        server = start_server(model_folder(Path(root)), port)
        try:
            for _ in range(5):  # warm-up: first-call allocations, lazy set-up
                httpx.post(f"{url}/v1/completions", json=BODY, headers=AUTH, timeout=60)
            baseline_kb = memory_kb(server.pid, "VmRSS")
            load_before = os.getloadavg()[0]
            watch = Watch(url, server.pid)
            watch.start()
            started = time.perf_counter()
            results = asyncio.run(traffic(url, port, args.seconds))
            wall = time.perf_counter() - started
            deadline = time.monotonic() + 30
            while (busy := httpx.get(f"{url}/health").json()["queued"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            watch.stopped.set()
            watch.join()
            peak_kb = memory_kb(server.pid, "VmHWM")
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a server stuck on its event loop does not even hear SIGTERM
                server.kill()
                server.wait()
    by_kind: dict[str, Counter] = defaultdict(Counter)
    for kind, result, _ in results:
        by_kind[kind][result] += 1
    unexpected = {kind: dict(counts) for kind, counts in by_kind.items()
                  if set(counts) - {str(s) for s in EXPECTED[kind]}}
    growth_mb = (peak_kb - baseline_kb) / 1024
    summary = {
        "seconds": round(wall, 1), "requests": len(results),
        "results": {kind: dict(counts) for kind, counts in sorted(by_kind.items())}, "unexpected": unexpected,
        "server_errors": sum(n for counts in by_kind.values() for r, n in counts.items() if r.startswith("5")),
        "health_checks": len(watch.health_s), "health_failures": watch.health_failures,
        "health_max_s": round(max(watch.health_s), 4), "health_p50_s": round(sorted(watch.health_s)[len(watch.health_s) // 2], 4),
        "rss_baseline_mb": round(baseline_kb / 1024, 1), "rss_peak_mb": round(peak_kb / 1024, 1),
        "rss_growth_mb": round(growth_mb, 1), "max_growth_mb": args.max_growth_mb, "busy_slots_after": busy,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    summary["passed"] = (not unexpected and summary["server_errors"] == 0 and summary["health_max_s"] < 1.0
                         and not watch.health_failures and growth_mb <= args.max_growth_mb and busy == 0)
    print(f"{len(results)} requests in {wall:.1f} s; results {summary['results']}")
    print(f"/health: {len(watch.health_s)} checks, max {summary['health_max_s']:.3f} s, p50 "
          f"{summary['health_p50_s']:.3f} s; server memory {summary['rss_baseline_mb']} MB after warm-up, peak "
          f"{summary['rss_peak_mb']} MB (+{summary['rss_growth_mb']} MB, target <= {args.max_growth_mb}); busy slots "
          f"after: {busy}; load average {summary['load_average'][0]} -> {summary['load_average'][1]}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
