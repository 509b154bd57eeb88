"""Load test of the OpenAI-compatible server, loopback only and bounded: N concurrent requests at once.

A small random LLaMA-style model is served in-process (decoding on the server's worker thread, batched);
N completions are sent at the same moment, a tenth of them as streams that hang up after the first event.
Prints latency percentiles, status counts and whether every slot came back; last line one JSON object.
Target: no 5xx, and the server idle again after the hang-ups.

    python benchmarks/serve_load.py [--requests 200] [--max-tokens 16] [--max-batch 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
import torch
from safetensors.torch import save_file

from llmrecipe.generate.artifact import load_model
from llmrecipe.models.build import build_model
from llmrecipe.models.shape import ModelShape
from llmrecipe.serve.app import ServeSettings
from llmrecipe.serve.server import background_server
from llmrecipe.tokenizer.train import train_bpe

TEXT = ["To be, or not to be, that is the question.", "The quick brown fox jumps over the lazy dog."] * 8


def model_folder(root: Path) -> Path:
    shape = ModelShape(arch="llama", n_layer=2, n_head=4, n_kv_head=4, d_model=64, head_dim=16, ffn_hidden=192,
                       vocab_size=320, seq_len=128, dropout=0.0, rope_theta=10000.0, tie_embeddings=True)
    torch.manual_seed(0)
    model = build_model(shape)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, root / "model.safetensors")
    (root / "config.json").write_text(shape.model_dump_json())
    train_bpe(TEXT, vocab_size=320, min_frequency=2, eot_token="<|endoftext|>").save(str(root / "tokenizer.json"))
    return root


async def one(client: httpx.AsyncClient, index: int, max_tokens: int) -> tuple[int, float, str]:
    body = {"model": "bench", "prompt": TEXT[index % 2], "max_tokens": max_tokens, "temperature": 0.8,
            "seed": index}
    started = time.perf_counter()
    if index % 10 == 9:  # a client that hangs up mid-stream
        async with client.stream("POST", "/v1/completions", json={**body, "stream": True}) as response:
            async for _ in response.aiter_lines():
                break
            return response.status_code, time.perf_counter() - started, "stream-hang-up"
    response = await client.post("/v1/completions", json=body)
    return response.status_code, time.perf_counter() - started, "completion"


async def load(url: str, requests: int, max_tokens: int) -> list[tuple[int, float, str]]:
    limits = httpx.Limits(max_connections=requests + 8, max_keepalive_connections=requests + 8)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
        return await asyncio.gather(*(one(client, i, max_tokens) for i in range(requests)))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as root:
        model = load_model(model_folder(Path(root)))
        settings = ServeSettings(model_name="bench", capacity=args.requests + 8, max_batch=args.max_batch)
        with background_server(model, settings) as url:
            started = time.perf_counter()
            results = asyncio.run(load(url, args.requests, args.max_tokens))
            wall = time.perf_counter() - started
            deadline = time.monotonic() + 30
            while (busy := httpx.get(f"{url}/health").json()["queued"]) and time.monotonic() < deadline:
                time.sleep(0.05)
    statuses = Counter(status for status, _, _ in results)
    latencies = [seconds for status, seconds, kind in results if status == 200 and kind == "completion"]
    summary = {
        "requests": args.requests, "max_tokens": args.max_tokens, "max_batch": args.max_batch,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors": sum(v for k, v in statuses.items() if k >= 500),
        "p50_s": round(percentile(latencies, 50), 4), "p99_s": round(percentile(latencies, 99), 4),
        "wall_s": round(wall, 3), "requests_per_s": round(args.requests / wall, 1),
        "busy_slots_after": busy, "load_average": os.getloadavg()[0],
    }
    print(f"{args.requests} concurrent requests in {wall:.2f} s: statuses {dict(statuses)}; completion latency "
          f"p50 {summary['p50_s']:.3f} s, p99 {summary['p99_s']:.3f} s; busy slots after: {busy}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
