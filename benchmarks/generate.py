"""Decode speed, greedy, batch 1: our torch engine, our onnxruntime engine and Hugging Face `generate`, on
the same weights (one random model exported both ways), the same prompt and the same number of new tokens.

Tokens/s counts new tokens over the whole call (prefill included, the same for all three); each runtime
runs `--repeat` times and its best run is reported. All three give the same tokens (checked). Target: the
best of ours ≥ 5x Hugging Face. Last line: one JSON object.

    python benchmarks/generate.py [--arch llama|gpt2] [--new-tokens 200] [--repeat 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from llmrecipe.export.hf import write_hf_folder
from llmrecipe.export.onnx import export_decoder
from llmrecipe.generate.decoders import OnnxDecoder, TorchDecoder
from llmrecipe.generate.engine import Engine
from llmrecipe.generate.sampling import SamplingParams
from llmrecipe.models import build_model
from llmrecipe.plan.specs import ModelShape
from llmrecipe.tokenizer.train import train_bpe

PROMPT = list(range(1, 17))  # 16 prompt tokens


def quickstart_shape(arch: str) -> ModelShape:
    """The quickstart recipe's model: 4 layers, 4 heads, width 256, context 256, vocabulary 4096."""
    ffn = 704 if arch == "llama" else 1024
    return ModelShape(arch=arch, n_layer=4, n_head=4, n_kv_head=4, d_model=256, head_dim=64, ffn_hidden=ffn,
                      vocab_size=4096, seq_len=256, dropout=0.0, rope_theta=10000.0, tie_embeddings=True)


def best_rate(run, new_tokens: int, repeat: int) -> tuple[float, list[int]]:
    best, tokens = 0.0, []
    for _ in range(repeat):
        started = time.perf_counter()
        tokens = run()
        best = max(best, new_tokens / (time.perf_counter() - started))
    return best, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["llama", "gpt2"], default="llama")
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="for all three runtimes; one thread suits batch-1 decoding, whose matmuls are tiny")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForCausalLM

    shape = quickstart_shape(args.arch)
    torch.manual_seed(0)
    model = build_model(shape).eval()
    params = SamplingParams(max_tokens=args.new_tokens, temperature=0.0)
    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        (root / "ours").mkdir()
        (root / "hf").mkdir()
        save_file({k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
                  root / "ours" / "model.safetensors")
        train_bpe(["a tiny corpus for a tokenizer file"] * 4, vocab_size=300, min_frequency=2,
                  eot_token="<|endoftext|>").save(str(root / "ours" / "tokenizer.json"))
        export_decoder(model, root / "model.onnx", opset=18)
        write_hf_folder(model, root / "ours", root / "hf")
        hf = AutoModelForCausalLM.from_pretrained(str(root / "hf"), local_files_only=True).eval()

        torch_engine = Engine(TorchDecoder(model))
        onnx_engine = Engine(OnnxDecoder(root / "model.onnx", shape, threads=args.threads))
        prompt = torch.tensor([PROMPT])

        def hf_generate() -> list[int]:
            with torch.inference_mode():
                total = len(PROMPT) + args.new_tokens  # max_length, not max_new_tokens: the folder's
                # generation_config.json sets max_length, and giving both draws a warning per call
                out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_length=total, min_length=total,
                                  do_sample=False, eos_token_id=None, pad_token_id=0)
            return out[0, len(PROMPT):].tolist()

        rates = {}
        tokens = {}
        for name, run in (
            ("torch", lambda: torch_engine.generate([PROMPT], params)[0].token_ids),
            ("onnxruntime", lambda: onnx_engine.generate([PROMPT], params)[0].token_ids),
            ("hf_generate", hf_generate),
        ):
            run()  # warm-up: first-call allocations and lazy initialisation are not decode speed
            rates[name], tokens[name] = best_rate(run, args.new_tokens, args.repeat)
            print(f"{name:>12}: {rates[name]:8.1f} new tokens/s")
    same = tokens["torch"] == tokens["onnxruntime"] == tokens["hf_generate"]
    best_ours = max(rates["torch"], rates["onnxruntime"])
    summary = {
        "arch": args.arch, "new_tokens": args.new_tokens, "prompt_tokens": len(PROMPT), "threads": args.threads,
        "tokens_per_s": {k: round(v, 1) for k, v in rates.items()}, "same_tokens": same,
        "best_ours_over_hf": round(best_ours / rates["hf_generate"], 2), "target_ratio": 5.0,
        "load_average": os.getloadavg()[0],
    }
    print(f"same greedy tokens in all three: {same}; best of ours / Hugging Face = {summary['best_ours_over_hf']}x "
          f"(target 5x); load average {summary['load_average']:.1f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
