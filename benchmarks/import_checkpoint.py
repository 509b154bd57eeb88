"""Importing a ~1B-parameter LLaMA-shaped bf16 checkpoint: our import + load against transformers' from_pretrained.

Writes a random checkpoint (Llama 3.2 1B's shape with a 32k vocabulary: 16 layers, width 2048, 32 heads, 8 key/value
heads, ~1.04B parameters, 2.1 GB in bf16) sharded by `save_pretrained(max_shard_size=...)`, then measures, each in a
fresh process with the page cache warm from the write:
- ours, cold: `llmrecipe` plans a recipe with an import step (digesting every file: the first plan of a checkpoint),
  runs it, and loads the model in bf16 (meta-device build, shard by shard, each tensor read into place);
- ours, warm: the same again, as every later plan, `generate` or `serve` sees it (digests from the cache, the import
  step already in the store);
- transformers: `AutoModelForCausalLM.from_pretrained(dtype=torch.bfloat16)`.
Each reports its load time after its imports (and its wall time with them) and its peak RSS (the process's whole
resident set, interpreter and libraries included, and the same above the RSS right after its imports), and the
logits of a fixed prompt, compared between the two.
Targets: peak RSS <= 1.2x the checkpoint's bytes, warm load no slower than transformers', zero weight bytes copied
into the store. Not measured: loads from a cold disk (the file was just written) and GPU loads.

    python benchmarks/import_checkpoint.py [--layers 16] [--shard-size 500MB] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT = list(range(1, 17))


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def write_checkpoint(folder: Path, layers: int, width: int, vocab: int, shard_size: str) -> None:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                         num_attention_heads=width // 64, num_key_value_heads=width // 256, vocab_size=vocab,
                         max_position_embeddings=2048, tie_word_embeddings=True, rope_theta=500000.0)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model = model.to_empty(device="cpu").to(torch.bfloat16)
    model.tie_weights()  # to_empty gave the output projection its own tensor
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02, generator=generator) if param.dim() > 1 else param.fill_(1.0)
    model.save_pretrained(str(folder), max_shard_size=shard_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.train_from_iterator(["a random checkpoint needs only some tokenizer"] * 10,
                                  trainers.BpeTrainer(vocab_size=300, special_tokens=["<|end_of_text|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|end_of_text|>"}))


def measure_ours(folder: Path, workdir: Path, logits_out: Path) -> dict:
    started = time.perf_counter()
    import torch

    from llmrecipe import api
    from llmrecipe.checkpoints import load  # noqa: F401  (the loader's imports, as transformers' are imported below)
    from llmrecipe.models.build import load_trained

    imported, imports_done = current_rss_mb(), time.perf_counter()
    recipe = workdir / "import.toml"
    recipe.write_text(f'[run]\nname = "import-bench"\ndevice = "cpu"\n\n[steps.base]\nkind = "import"\n'
                      f'path = "{folder}"\ndtype = "bf16"\n')
    loaded = api.load(recipe)
    plan = api.compile(loaded, workdir)
    planned = time.perf_counter()
    api.run(loaded, plan=plan, workdir=workdir)
    model, _ = load_trained(api.artifact(plan, "base"), "cpu", dtype=None)
    loaded_at = time.perf_counter()
    with torch.no_grad():
        torch.save(model(torch.tensor([PROMPT]))[0].float(), logits_out)
    copied = sum(path.stat().st_size for path in (workdir / "store").rglob("*.safetensors"))
    return {"wall_s": loaded_at - started, "load_s": loaded_at - imports_done, "plan_s": planned - imports_done,
            "peak_rss_mb": rss_mb(),
            "rss_after_imports_mb": imported, "copied_weight_bytes": copied,
            "dtype": str(next(model.parameters()).dtype)}


def measure_transformers(folder: Path, logits_out: Path) -> dict:
    started = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    imported, imports_done = current_rss_mb(), time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.bfloat16).eval()
    loaded_at = time.perf_counter()
    with torch.no_grad():
        torch.save(model(torch.tensor([PROMPT])).logits[0].float(), logits_out)
    return {"wall_s": loaded_at - started, "load_s": loaded_at - imports_done, "peak_rss_mb": rss_mb(),
            "rss_after_imports_mb": imported,
            "dtype": str(next(model.parameters()).dtype)}


def child(*args: str) -> dict:
    """Run one measurement in a fresh interpreter; its last output line is its JSON figures."""
    run = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, cwd=REPO)
    if run.returncode:
        raise SystemExit(f"{args[0]} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--shard-size", default="500MB")
    parser.add_argument("--keep", type=Path, help="write the checkpoint and workdir here and keep them")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, folder, *rest = args.child
        if role == "write":
            write_checkpoint(Path(folder), args.layers, args.width, args.vocab, args.shard_size)
            print("{}")
            return
        figures = (measure_ours(Path(folder), Path(rest[0]), Path(rest[1])) if role == "ours"
                   else measure_transformers(Path(folder), Path(rest[0])))
        print(json.dumps(figures))
        return
    with tempfile.TemporaryDirectory() as scratch:
        root = args.keep or Path(scratch)
        folder, workdir = root / "checkpoint", root / "work"
        workdir.mkdir(parents=True, exist_ok=True)
        if not (folder / "config.json").is_file():  # a kept checkpoint is reused
            # In its own process: a peak RSS survives fork and exec, so the measuring processes are started from one
            # that never held a model.
            child("--layers", str(args.layers), "--width", str(args.width), "--vocab", str(args.vocab),
                  "--shard-size", args.shard_size, "--child", "write", str(folder))
        size = sum(path.stat().st_size for path in folder.glob("*.safetensors"))
        shards = len(list(folder.glob("*.safetensors")))
        print(f"checkpoint: {size / 1e9:.2f} GB of bf16 weights in {shards} shards ({args.layers} layers, width "
              f"{args.width}, vocab {args.vocab})")
        theirs = child("--child", "transformers", str(folder), str(root / "theirs.pt"))
        cold = child("--child", "ours", str(folder), str(workdir), str(root / "ours.pt"))
        warm = child("--child", "ours", str(folder), str(workdir), str(root / "ours.pt"))
        import torch

        difference = float((torch.load(root / "ours.pt") - torch.load(root / "theirs.pt")).abs().max())
    gb = size / 1e9
    for name, figures in (("transformers", theirs), ("ours (first plan)", cold), ("ours (warm)", warm)):
        ratio = figures["peak_rss_mb"] * 2**20 / size
        print(f"{name:>18}: load {figures['load_s']:6.2f} s after imports ({figures['wall_s']:.2f} s with them), peak RSS {figures['peak_rss_mb'] * 2**20 / 1e9:.2f} GB "
              f"({ratio:.2f}x the checkpoint; {(figures['peak_rss_mb'] - figures['rss_after_imports_mb']) * 2**20 / 1e9:.2f}"
              " GB above its imports)")
    print(f"logits of a 16-token prompt, ours vs transformers (both bf16): max |difference| = {difference:.3g}")
    print(f"weight bytes copied into the store: {warm['copied_weight_bytes']}")
    result = {
        "checkpoint_bytes": size, "shards": shards, "parameters_approx": round(size / 2),
        "transformers": theirs, "ours_first_plan": cold, "ours_warm": warm,
        "peak_rss_ratio": {"ours_warm": warm["peak_rss_mb"] * 2**20 / size,
                           "ours_first_plan": cold["peak_rss_mb"] * 2**20 / size,
                           "transformers": theirs["peak_rss_mb"] * 2**20 / size},
        "load_time_ratio_warm": warm["load_s"] / theirs["load_s"], "max_logit_difference": difference,
        "targets": {"peak_rss_ratio_max": 1.2, "load_no_slower_than_transformers": True, "copied_weight_bytes": 0},
        "meets_targets": warm["peak_rss_mb"] * 2**20 <= 1.2 * size and cold["peak_rss_mb"] * 2**20 <= 1.2 * size
        and warm["load_s"] <= theirs["load_s"] and warm["copied_weight_bytes"] == 0,
        "checkpoint_gb": round(gb, 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
