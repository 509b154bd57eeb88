"""Check llmrecipe on a GPU in one run of at most a few minutes: the `cuda` tests, training throughput and MFU of
our GPT-2 and LLaMA against Hugging Face's at GPT-2-small size (bf16, compiled, both sides), and decoding speed.

    PYTHONPATH=$PWD python3 benchmarks/gpu_check.py [--budget 480] [--out DIR]

On a GPU it runs:
- the tests marked `cuda` (fused attention kernels on every path, FlexAttention for packed rows, the fused loss, a
  compiled bf16 decoder, SFT with LoRA, classification, FSDP2 in a group of one, decoding on the GPU);
- GPT-2-small (12 layers, 12 heads, width 768, sequence 1024, vocabulary 50304) and a LLaMA of the same size, about
  100 training steps each in bf16 with torch.compile, beside transformers' GPT2LMHeadModel and LlamaForCausalLM
  (SDPA, bf16, compiled) in the same run (benchmarks/train_throughput.py's interleaved rounds);
- decode tokens/s of the torch engine (KV cache, batch 1, greedy) on a LLaMA of that size.
MFU is given against the GPU's datasheet dense bf16 peak and against the matmul peak measured in the run. Targets:
our models at >= 1.3x transformers' tokens/s, MFU >= 40% of the datasheet peak.

Without a GPU it says so and runs the same code at a tiny size on the CPU, eager, and exits 0 (CI runs this pass).
Not measured: multi-GPU scaling, data loading (one fixed batch), memory. The last line is one JSON object; with
--out (or $OUT) it is also written to gpu_check.json there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.train_throughput import Peaks, compare  # noqa: E402
from llmrecipe.models.shape import ModelShape  # noqa: E402

SIZES = {
    "gpt2-small": dict(n_layer=12, n_head=12, d_model=768, seq_len=1024, vocab_size=50304, batch=16),
    "tiny": dict(n_layer=2, n_head=2, d_model=64, seq_len=64, vocab_size=512, batch=4),
}
DATASHEET_BF16 = {"H100": 989.4e12, "H200": 989.4e12, "GH200": 989.4e12, "B200": 2250e12, "A100": 312e12,
                  "L40S": 362e12, "A10G": 70e12, "L4": 121e12}
"""Dense bf16 tensor-core peaks (FLOP/s, no sparsity) from NVIDIA's datasheets, by a name the device reports."""
TARGET_RATIO, TARGET_MFU = 1.3, 0.40


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=480, help="seconds for the whole check")
    parser.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_check.json")
    args = parser.parse_args()
    started = time.monotonic()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    name = torch.cuda.get_device_name() if cuda else "no GPU"
    print(f"torch {torch.__version__}, {name}" + ("" if cuda else ": the CPU pass at a tiny size, eager"), flush=True)

    tests = run_cuda_tests(timeout=max(60.0, args.budget * 0.45))
    print(f"cuda tests: {tests}", flush=True)

    size = "gpt2-small" if cuda else "tiny"
    precision = "bf16" if cuda else "fp32"
    settings = SimpleNamespace(warmup=10, steps=15, rounds=6) if cuda else SimpleNamespace(warmup=1, steps=2, rounds=2)
    peaks = Peaks(device)
    rows = [compare(arch, size, precision, cuda, peaks, settings, SIZES, device) for arch in ("gpt2", "llama")]
    rows = [peaks.with_mfu(row) for row in rows]
    datasheet = next((peak for key, peak in DATASHEET_BF16.items() if re.search(rf"\b{key}\b", name)), None)
    for row in rows:
        row["mfu_datasheet"] = round(row["tokens_per_s"] * row["flops_per_token"] / datasheet, 3) if datasheet else None
        row["hf_mfu_datasheet"] = (round(row["hf_tokens_per_s"] * row["flops_per_token"] / datasheet, 3)
                                   if datasheet else None)
        print(f"{row['arch']}: ours {row['tokens_per_s']:,.0f} tok/s, transformers {row['hf_tokens_per_s']:,.0f} tok/s, "
              f"ratio {row['ratio']}, MFU {row['mfu']} of the measured peak"
              + (f", {row['mfu_datasheet']} of the datasheet's" if datasheet else ""), flush=True)

    decode = decode_speed(SIZES[size], device)
    print(f"decode: {decode:,.1f} tokens/s (torch engine, batch 1, greedy, {device})", flush=True)

    targets = {f"ratio_{row['arch']}>={TARGET_RATIO}": row["ratio"] >= TARGET_RATIO for row in rows}
    targets.update({f"mfu_{row['arch']}>={TARGET_MFU}": (row["mfu_datasheet"] or 0.0) >= TARGET_MFU for row in rows})
    result = {
        "device": device, "gpu": name, "torch": torch.__version__, "tests": tests, "size": size,
        "precision": precision, "compiled": cuda, "throughput": rows, "decode_tokens_per_s": round(decode, 1),
        "measured_peak_tflops": round(peaks.best[precision] / 1e12, 1), "datasheet_peak_tflops":
        datasheet / 1e12 if datasheet else None, "targets": targets if cuda else "not judged on the CPU pass",
        "seconds": round(time.monotonic() - started, 1),
    }
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result), flush=True)
    return 0 if tests.get("failed", 0) == 0 and tests.get("error") is None else 1


def run_cuda_tests(timeout: float) -> dict:
    """The tests marked `cuda`, in a subprocess; counts of each outcome (all skipped without a GPU)."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", "tests/test_cuda.py",
               "-rfE"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"the cuda tests took over {timeout:.0f} s"}
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)", done.stdout)}
    if done.returncode not in (0, 5) or counts.get("failed") or counts.get("error") or counts.get("errors"):
        print(done.stdout[-6000:], done.stderr[-2000:], sep="\n", flush=True)
    if done.returncode not in (0, 1, 5):
        counts["error"] = f"pytest exited {done.returncode}"
    return counts


@torch.inference_mode()
def decode_speed(size: dict, device: str, new_tokens: int = 256) -> float:
    """Greedy decoding of one prompt with the engine's KV cache, new tokens per second (after one warm-up)."""
    from llmrecipe.generate.decoders import TorchDecoder
    from llmrecipe.generate.engine import Engine
    from llmrecipe.generate.sampling import SamplingParams
    from llmrecipe.models.build import build_model
    from llmrecipe.training.device import prepare_device

    prepare_device(device, tf32=True)
    d = size["d_model"]
    shape = ModelShape(arch="llama", n_layer=size["n_layer"], n_head=size["n_head"], n_kv_head=size["n_head"],
                       d_model=d, head_dim=d // size["n_head"], ffn_hidden=64 * round(8 / 3 * d / 64),
                       vocab_size=size["vocab_size"], seq_len=size["seq_len"], dropout=0.0, rope_theta=10000.0,
                       tie_embeddings=True)
    torch.manual_seed(0)
    engine = Engine(TorchDecoder(build_model(shape).to(device)))
    budget = min(new_tokens, shape.seq_len - 16)
    params = SamplingParams(max_tokens=budget, temperature=0.0, seed=0)
    engine.generate([list(range(1, 17))], SamplingParams(max_tokens=8, temperature=0.0, seed=0))  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    completion = engine.generate([list(range(1, 17))], params)[0]
    if device == "cuda":
        torch.cuda.synchronize()
    return len(completion.token_ids) / (time.perf_counter() - start)


if __name__ == "__main__":
    raise SystemExit(main())
