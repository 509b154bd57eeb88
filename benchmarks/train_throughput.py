"""Training throughput of our GPT-2 and LLaMA style decoders against Hugging Face transformers' GPT2LMHeadModel
and LlamaForCausalLM built with the same dimensions, batch and dtype, on this machine.

One training step = forward, loss, backward, gradient clipping, fused AdamW step (both sides). Ours is the trainer's
own step: the task's objective (model and loss) run as the trainer distributes and compiles it, and the trainer's
one host sync per step (loss and gradient norm read back); Hugging Face's side never syncs. Each model runs a few
warm-up steps, then several timed rounds interleaved with its peer (so load from other processes hits both alike);
the best round counts. MFU = model FLOPs per token (6N + attention, as `llmrecipe plan` derives them) x tokens/s
over the measured matmul peak of the same precision.

    python benchmarks/train_throughput.py [--compile] [--steps 4] [--rounds 5] [--sizes 6x384] [--archs llama]

With --compile both sides are compiled (Hugging Face's model with torch.compile too), and compiled rows also give
`warmup_seconds`: the first steps including the compile (cold unless inductor's cache already holds these graphs).
The matmul peak is the fastest of many single matmuls, probed between the timed rounds all through the run (the
printed rows use the best so far, the last line the best of all).

Sizes: the two small ones it was tuned at (sequence 256, vocabulary 8192), and one at the sequence length and
vocabulary of real models (1024 tokens, 32k vocabulary), where attention and the output layer weigh more. Not
measured here: data loading (both sides train on one fixed batch), multi-process scaling, memory.

The last line is one JSON object; its headline keys are for the default settings (first size, bf16 autocast
where the CPU supports it, eager).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch

from llmrecipe.host import probe_host
from llmrecipe.models.build import build_model
from llmrecipe.models.family import round_up
from llmrecipe.plan.derive import flops_per_token
from llmrecipe.models.shape import ModelShape
from llmrecipe.recipe.pretrain import OptimConfig
from llmrecipe.training.distributed import World, distribute
from llmrecipe.training.optim import build_optimizer
from llmrecipe.training.peak import measure_matmul_flops
from llmrecipe.training.tasks.windows import LanguageModelObjective

SIZES = {
    # PEERS.md's reference size for transformers on this machine, and a smaller one.
    "6x384": dict(n_layer=6, n_head=6, d_model=384, seq_len=256, vocab_size=8192, batch=8),
    "4x256": dict(n_layer=4, n_head=4, d_model=256, seq_len=256, vocab_size=8192, batch=8),
    # Real models' sequence length and vocabulary (LLaMA-2's 32,000 ids), same tokens per step as the others.
    "6x384-s1024-v32k": dict(n_layer=6, n_head=6, d_model=384, seq_len=1024, vocab_size=32000, batch=2),
}


def our_shape(arch: str, size: dict) -> ModelShape:
    d = size["d_model"]
    return ModelShape(
        arch=arch, n_layer=size["n_layer"], n_head=size["n_head"], n_kv_head=size["n_head"], d_model=d,
        head_dim=d // size["n_head"], ffn_hidden=4 * d if arch == "gpt2" else round_up(8 / 3 * d, 64),
        vocab_size=size["vocab_size"], seq_len=size["seq_len"], dropout=0.0, rope_theta=10000.0, tie_embeddings=True,
    )


def hf_model(shape: ModelShape) -> torch.nn.Module:
    import transformers

    common = dict(vocab_size=shape.vocab_size, bos_token_id=0, eos_token_id=0, tie_word_embeddings=True)
    if shape.arch == "gpt2":
        config = transformers.GPT2Config(
            n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.d_model, n_positions=shape.seq_len,
            n_inner=shape.ffn_hidden, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
        )
        return transformers.GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    config = transformers.LlamaConfig(
        hidden_size=shape.d_model, intermediate_size=shape.ffn_hidden, num_hidden_layers=shape.n_layer,
        num_attention_heads=shape.n_head, num_key_value_heads=shape.n_kv_head,
        max_position_embeddings=shape.seq_len, rms_norm_eps=shape.norm_eps, **common,
    )
    return transformers.LlamaForCausalLM._from_config(config, attn_implementation="sdpa")


class Trainer:
    """A model, its optimizer and one fixed batch; `rate(steps)` times that many training steps."""

    def __init__(self, model: torch.nn.Module, shape: ModelShape, batch: int, precision: str, hf: bool, compiled: bool,
                 device: str = "cpu"):
        torch.manual_seed(0)
        self.model = model.to(device).train()
        self.device, self.precision, self.hf = device, precision, hf
        if hf:  # fused AdamW: what transformers' Trainer uses by default on torch >= 2.8
            self.forward = torch.compile(model) if compiled else model
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
        else:  # what our trainer runs: the objective (model + loss), compiled whole; fused AdamW without decay on
            # norms, biases and embeddings
            self.forward = distribute(LanguageModelObjective(model), model, None, World(), "ddp", precision, device,
                                      compiled, dynamic=False)
            self.optimizer = build_optimizer(model, OptimConfig(lr=1e-4, beta2=0.95, weight_decay=0.1), device)
        self.x = torch.randint(0, shape.vocab_size, (batch, shape.seq_len), device=device)  # (B, T)
        self.y = torch.randint(0, shape.vocab_size, (batch, shape.seq_len), device=device)

    def step(self) -> None:
        autocast = (torch.autocast(self.device, dtype=torch.bfloat16) if self.precision == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            if self.hf:  # transformers computes its shifted loss inside the model
                loss = self.forward(input_ids=self.x, labels=self.x).loss
            else:  # the loss our trainer computes: the objective's sum over the batch's count
                loss = self.forward(inputs=self.x, targets=self.y)["loss"] / self.y.numel()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        if not self.hf:
            torch.stack([loss.detach(), norm]).tolist()  # the trainer's one host sync per step
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def rate(self, steps: int) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        synchronize(self.device)
        return steps * self.x.numel() / (time.perf_counter() - start)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def compare(arch: str, size_name: str, precision: str, compiled: bool, peaks: Peaks, args, sizes: dict = SIZES,
            device: str = "cpu") -> dict:
    size = sizes[size_name]
    shape = our_shape(arch, size)
    ours = Trainer(build_model(shape), shape, size["batch"], precision, hf=False, compiled=compiled, device=device)
    theirs = Trainer(hf_model(shape), shape, size["batch"], precision, hf=True, compiled=compiled, device=device)
    warmup_seconds = {}
    for name, trainer in (("ours", ours), ("theirs", theirs)):
        start = time.perf_counter()
        for _ in range(args.warmup):
            trainer.step()
        warmup_seconds[name] = time.perf_counter() - start
    best_ours = best_theirs = 0.0
    for _ in range(args.rounds):  # interleaved, so a burst of load from elsewhere hits both
        best_ours = max(best_ours, ours.rate(args.steps))
        best_theirs = max(best_theirs, theirs.rate(args.steps))
        peaks.probe(precision)
    row = {"arch": arch, "size": size_name, "precision": precision, "compiled": compiled,
           "tokens_per_s": round(best_ours, 1), "hf_tokens_per_s": round(best_theirs, 1),
           "ratio": round(best_ours / best_theirs, 3), "flops_per_token": flops_per_token(shape)}
    if compiled:  # what the first steps cost with a cold compile (inductor's cache may make it warm)
        row["warmup_seconds"] = round(warmup_seconds["ours"], 1)
        row["hf_warmup_seconds"] = round(warmup_seconds["theirs"], 1)
    print(json.dumps(peaks.with_mfu(row)), flush=True)
    return row


class Peaks:
    """The matmul peak per precision: the best of short probes taken between the timed rounds of the whole run.
    Like the best round of a model, the best probe is the one that load from elsewhere disturbed least; one probe
    taken in a slow moment would make every MFU of the run too high (above 1, even)."""

    def __init__(self, device: str = "cpu"):
        self.device = device
        self.best: dict[str, float] = {}

    def probe(self, precision: str) -> None:
        measured = measure_matmul_flops(self.device, precision, seconds=0.4)
        self.best[precision] = max(self.best.get(precision, 0.0), measured)

    def with_mfu(self, row: dict) -> dict:
        peak = self.best[row["precision"]]
        return {**row, "mfu": round(row["tokens_per_s"] * row["flops_per_token"] / peak, 3),
                "hf_mfu": round(row["hf_tokens_per_s"] * row["flops_per_token"] / peak, 3),
                "peak_gflops": round(peak / 1e9, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per model (the best counts: short rounds dodge bursts of load)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time our models under torch.compile (cold compiles take ~40 s each)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--archs", nargs="+", default=["gpt2", "llama"], choices=["gpt2", "llama"])
    args = parser.parse_args()
    default_precision = "bf16" if probe_host().cpu_bf16 else "fp32"
    precisions = [default_precision] + (["fp32"] if default_precision != "fp32" else [])
    rows, peaks = [], Peaks()
    for size_name in args.sizes:
        for precision in precisions:
            for arch in args.archs:
                rows.append(compare(arch, size_name, precision, False, peaks, args))
                if args.compile:
                    rows.append(compare(arch, size_name, precision, True, peaks, args))
    rows = [peaks.with_mfu(row) for row in rows]  # against the best peak of the whole run
    headline = {r["arch"]: r for r in rows
                if r["size"] == args.sizes[0] and r["precision"] == default_precision and not r["compiled"]}
    figures = {}
    for key, field in (("{}_tokens_per_s", "tokens_per_s"), ("hf_{}_tokens_per_s", "hf_tokens_per_s"),
                       ("ratio_{}", "ratio"), ("mfu_{}", "mfu")):
        figures.update({key.format(arch): headline[arch][field] for arch in args.archs})
    print(json.dumps({
        **figures,
        "precision": default_precision,
        "size": args.sizes[0],
        "threads": torch.get_num_threads(),
        "rows": rows,
    }))


if __name__ == "__main__":
    main()
