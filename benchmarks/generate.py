"""Decode speed, greedy, batch 1: our torch engine, our onnxruntime engine and Hugging Face `generate` (eager with
its dynamic cache, and with its static cache under torch.compile), on the same weights, the same prompt tokens and
the same number of new tokens, in one run, at a tiny size and at GPT-2 small's 124M parameters.

Our onnxruntime engine decodes an opset-23 export with the fused graph it builds from `model.onnx` at load time
(generate/fused.py: GroupQueryAttention with the cache written in place); `onnxruntime_portable` is the same engine
on the portable `model.onnx` alone, shown for comparison (`onnxruntime_graph` in the JSON says which one the
engine used; with `--opset 18` both are the portable graph).

One random model per size is saved as a pretrain artifact (safetensors), exported by our exporters to ONNX (with
KV cache) and to the Hugging Face layout; our engines load the artifact through `load_model` as `llmrecipe
generate` does, Hugging Face loads its folder with `from_pretrained`, twice: `hf_generate` as it comes, and
`hf_static_compiled` with `cache_implementation="static"` and its forward under `torch.compile` (Hugging Face's
own advice for fast decoding; its cold compile is timed apart, as `hf_compile_s`, and left out of its rate).
Every runtime gets one warm-up call, then the runtimes take turns, `--repeat` rounds, so a change of machine
load hits all of them alike; each one's median round is reported. Tokens/s counts new tokens over the whole call
(the 16-token prompt's prefill included, the same for all); all return token ids, none detokenizes. Greedy
tokens must be identical across all of them (checked; the run fails otherwise).

Not measured: batches of more than one prompt, sampling (greedy only), long prompts (prefill speed), time to
the first token, detokenization, load and export time, memory, quantized models, and GPUs (everything runs on
the CPU). A random model's speed is a trained one's: the arithmetic is the same.

Threads: `--threads` for torch (`torch.set_num_threads`, shared by our torch engine and Hugging Face, which
run in this process) and for onnxruntime (intra-op threads; operators run sequentially).

Target: the best of ours >= 5x Hugging Face as it comes. Last line: one JSON object, per size.

    python benchmarks/generate.py [--sizes small 124m] [--arch llama|gpt2] [--new-tokens 200] [--repeat 5]
                                  [--threads 1] [--opset 23] [--skip-hf-compiled]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from llmrecipe.export.hf import write_hf_folder  # noqa: E402
from llmrecipe.export.onnx import export_decoder  # noqa: E402
from llmrecipe.generate.artifact import load_model  # noqa: E402
from llmrecipe.generate.decoders import OnnxDecoder  # noqa: E402
from llmrecipe.generate.engine import Engine  # noqa: E402
from llmrecipe.generate.sampling import SamplingParams  # noqa: E402
from llmrecipe.models.build import build_model  # noqa: E402
from llmrecipe.models.shape import ModelShape  # noqa: E402
from llmrecipe.tokenizer.train import train_bpe  # noqa: E402

PROMPT = list(range(1, 17))  # 16 prompt tokens

SIZES = {
    "small": dict(n_layer=2, n_head=4, n_kv_head=4, d_model=128, head_dim=32, vocab_size=4096, seq_len=256),
    "quickstart": dict(n_layer=4, n_head=4, n_kv_head=4, d_model=256, head_dim=64, vocab_size=4096, seq_len=256),
    "124m": dict(n_layer=12, n_head=12, n_kv_head=12, d_model=768, head_dim=64, vocab_size=50304, seq_len=1024),
}
"""`small`: a size where a token's matmuls are tiny next to per-token overhead. `quickstart`: recipes/quickstart.toml's
model. `124m`: GPT-2 small's dimensions and vocabulary (124M parameters), where reading the weights bounds a
token's time, as in the models people serve."""

NOT_MEASURED = ("batch > 1, sampling, long prompts (prefill), time to first token, detokenization, load and export "
                "time, memory, quantized models, GPUs")


def model_shape(size: str, arch: str) -> ModelShape:
    dims = SIZES[size]
    ffn = dims["d_model"] * 4 if arch == "gpt2" else dims["d_model"] * 11 // 4
    return ModelShape(arch=arch, ffn_hidden=ffn, dropout=0.0, rope_theta=10000.0, tie_embeddings=True, **dims)


def write_folders(model: torch.nn.Module, root: Path, opset: int) -> tuple[Path, Path]:
    """Our artifact (weights, config, tokenizer, ONNX graph) and its Hugging Face export."""
    ours, hf = root / "ours", root / "hf"
    ours.mkdir()
    hf.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
              ours / "model.safetensors")
    (ours / "config.json").write_text(model.shape.model_dump_json(indent=2))
    train_bpe(["a tiny corpus for a tokenizer file"] * 4, vocab_size=300, min_frequency=2,
              eot_token="<|endoftext|>").save(str(ours / "tokenizer.json"))
    export_decoder(model, ours / "model.onnx", opset=opset)
    write_hf_folder(model, ours, hf)
    return ours, hf


def rounds(runs: dict, repeat: int) -> tuple[dict[str, dict[str, list[float]]], dict[str, list[int]]]:
    """One warm-up call each, then `repeat` rounds in turn: wall and CPU seconds per call, tokens of the last call.

    CPU seconds (this process, all its threads) say what a call costs when other work shares the cores; with
    one thread on a quiet machine they equal wall seconds."""
    tokens = {name: run() for name, run in runs.items()}  # warm-up: first-call allocations, lazy set-up
    seconds: dict[str, dict[str, list[float]]] = {clock: {name: [] for name in runs} for clock in ("wall", "cpu")}
    for _ in range(repeat):
        for name, run in runs.items():
            wall, cpu = time.perf_counter(), time.process_time()
            tokens[name] = run()
            seconds["wall"][name].append(time.perf_counter() - wall)
            seconds["cpu"][name].append(time.process_time() - cpu)
    return seconds, tokens


def hf_runs(folder: Path, new_tokens: int, compiled: bool) -> dict:
    """Hugging Face `generate` as it comes, and (with `compiled`) with a static cache and a compiled forward."""
    from transformers import AutoModelForCausalLM

    prompt = torch.tensor([PROMPT])
    total = len(PROMPT) + new_tokens  # max_length, not max_new_tokens: the folder's generation_config.json sets
    # max_length, and giving both draws a warning per call

    def runner(model, **options):
        def run() -> list[int]:
            with torch.inference_mode():
                out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_length=total,
                                     min_length=total, do_sample=False, eos_token_id=None, pad_token_id=0, **options)
            return out[0, len(PROMPT):].tolist()
        return run

    runs = {"hf_generate": runner(AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval())}
    if compiled:
        static = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
        static.forward = torch.compile(static.forward)
        runs["hf_static_compiled"] = runner(static, cache_implementation="static")
    return runs


def measure(size: str, args: argparse.Namespace) -> dict:
    shape = model_shape(size, args.arch)
    torch.manual_seed(0)
    model = build_model(shape).eval()
    parameters = sum(p.numel() for p in model.parameters())
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0.0)
    with tempfile.TemporaryDirectory() as root:
        ours, hf_folder = write_folders(model, Path(root), args.opset)
        del model
        # Token ids in, token ids out, no end-of-text stop: the same work Hugging Face's call below does.
        torch_engine = Engine(load_model(ours, "torch").engine.decoder)
        onnx_decoder = load_model(ours, "onnx", threads=args.threads).engine.decoder
        onnx_engine = Engine(onnx_decoder)
        portable_engine = Engine(OnnxDecoder(ours / "model.onnx", shape, args.threads, fused=False))
        hf = hf_runs(hf_folder, args.new_tokens, not args.skip_hf_compiled)
        compile_seconds = None
        if "hf_static_compiled" in hf:  # the cold compile, timed alone and kept out of the rounds
            started = time.perf_counter()
            hf["hf_static_compiled"]()
            compile_seconds = time.perf_counter() - started
        load_before = os.getloadavg()[0]
        seconds, tokens = rounds({
            "torch": lambda: torch_engine.generate([PROMPT], params)[0].token_ids,
            "onnxruntime": lambda: onnx_engine.generate([PROMPT], params)[0].token_ids,
            "onnxruntime_portable": lambda: portable_engine.generate([PROMPT], params)[0].token_ids,
            **hf,
        }, args.repeat)
    rates = {clock: {name: args.new_tokens / statistics.median(times) for name, times in per_run.items()}
             for clock, per_run in seconds.items()}
    ours_names = [name for name in rates["wall"] if not name.startswith("hf_")]
    best = max(ours_names, key=rates["wall"].get)
    over = {peer: round(rates["wall"][best] / rates["wall"][peer], 2) for peer in hf}
    result = {
        "size": size, "arch": args.arch, "parameters": parameters, "shape": SIZES[size] | {"ffn": shape.ffn_hidden},
        "onnxruntime_graph": "fused" if onnx_decoder.fused_session is not None else "portable",
        "tokens_per_s": {k: round(v, 1) for k, v in rates["wall"].items()},
        "tokens_per_cpu_s": {k: round(v, 1) for k, v in rates["cpu"].items()},
        "same_tokens": all(tokens[name] == tokens["hf_generate"] for name in tokens), "best_ours": best,
        "best_ours_over_hf": over["hf_generate"],
        "best_ours_over_hf_cpu": round(rates["cpu"][best] / rates["cpu"]["hf_generate"], 2),
        "best_ours_over_hf_static_compiled": over.get("hf_static_compiled"),
        "hf_compile_s": round(compile_seconds, 1) if compile_seconds is not None else None,
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(f"model: {args.arch} {size}, {parameters / 1e6:.2f}M parameters; load average {load_before:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    for name in rates["wall"]:
        spread = ", ".join(f"{args.new_tokens / t:.0f}" for t in seconds["wall"][name])
        print(f"{name:>20}: {rates['wall'][name]:8.1f} new tokens/s wall (rounds: {spread}); "
              f"{rates['cpu'][name]:8.1f} per CPU second")
    print(f"best of ours ({best}) / Hugging Face: " + ", ".join(f"{peer} {ratio:.2f}x" for peer, ratio in over.items())
          + (f" (its cold compile took {compile_seconds:.0f} s)" if compile_seconds is not None else "")
          + f"; same greedy tokens in all runtimes: {result['same_tokens']}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=["small", "124m"])
    parser.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (our torch engine and Hugging Face) and onnxruntime intra-op threads")
    parser.add_argument("--opset", type=int, default=23, help="ONNX opset of the export (23 has fused attention)")
    parser.add_argument("--skip-hf-compiled", action="store_true",
                        help="leave out Hugging Face's static cache + torch.compile baseline (its cold compile is slow)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {size: measure(size, args) for size in args.sizes}
    summary = {"sizes": results, "new_tokens": args.new_tokens, "prompt_tokens": len(PROMPT), "threads": args.threads,
               "opset": args.opset, "target_ratio": 5.0, "cpus": os.cpu_count(), "not_measured": NOT_MEASURED}
    print(f"threads {args.threads} (torch and Hugging Face) / {args.threads} (onnxruntime intra-op) on "
          f"{os.cpu_count()} CPUs; not measured: {NOT_MEASURED}")
    print(json.dumps(summary))
    if not all(result["same_tokens"] for result in results.values()):
        sys.exit("the runtimes gave different greedy tokens: the speeds above compare different work")


if __name__ == "__main__":
    main()
