"""Preference tuning (DPO, IPO, SimPO): the losses against hand-computed values, the reference as the same model
with its adapters off, pairs from JSONL rows and their mistakes, and a preference step that learns, resumes
byte-identically and keeps one copy of the weights."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from llmrecipe.models.build import build_model
from llmrecipe.models.lora import adapters_disabled, apply_lora
from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.specs import FinetuneSpec, PreferenceSpec
from llmrecipe.recipe.finetune import CHAT_TEMPLATES, DatasetConfig, LoraConfig
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps.finetune.preference import run_preference
from llmrecipe.tokenizer.train import train_bpe
from llmrecipe.training.checkpoint import save_weights
from llmrecipe.training.distributed import World
from llmrecipe.training.tasks.preference_loss import dpo, ipo, pair_losses, simpo

CHATML, CHATML_TOKENS, IM_END = CHAT_TEMPLATES["chatml"]
TINY = ModelShape(arch="llama", n_layer=2, n_head=2, n_kv_head=2, d_model=32, head_dim=16, ffn_hidden=64,
                  vocab_size=320, seq_len=48, dropout=0.0, rope_theta=10000.0, tie_embeddings=True)


# --- the losses ---------------------------------------------------------------------------------------------------


def pairs(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_dpo_equals_the_hand_computed_value():
    # log-ratios: chosen -10 - (-11) = 1, rejected -12 - (-11) = -1; h = 2; beta h = 0.2
    out = dpo(pairs(-10.0), pairs(-12.0), pairs(-11.0), pairs(-11.0), beta=0.1)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-0.2)))  # 0.598138869
    assert out.losses.item() == pytest.approx(0.598138869, abs=1e-9)
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == pytest.approx((0.1, -0.1))


def test_dpo_of_a_policy_equal_to_its_reference_is_log_2():
    out = dpo(pairs(-3.0, -7.0), pairs(-5.0, -1.0), pairs(-3.0, -7.0), pairs(-5.0, -1.0), beta=0.1)
    assert out.losses.tolist() == pytest.approx([math.log(2)] * 2)
    assert out.chosen_rewards.tolist() == out.rejected_rewards.tolist() == [0.0, 0.0]


def test_ipo_pulls_the_log_ratio_gap_to_one_over_two_beta():
    # h = 2 as above: (2 - 1 / (2 * 0.1))^2 = (2 - 5)^2 = 9; with beta 0.5 the target is 1: (2 - 1)^2 = 1
    assert ipo(pairs(-10.0), pairs(-12.0), pairs(-11.0), pairs(-11.0), beta=0.1).losses.item() == pytest.approx(9.0)
    assert ipo(pairs(-10.0), pairs(-12.0), pairs(-11.0), pairs(-11.0), beta=0.5).losses.item() == pytest.approx(1.0)
    at_target = ipo(pairs(-9.0), pairs(-11.0), pairs(-11.0), pairs(-11.0), beta=0.25)  # h = 2 = 1 / (2 * 0.25)
    assert at_target.losses.item() == 0.0


def test_simpo_uses_length_averaged_log_probs_and_a_margin():
    # summed -20 over 10 tokens and -12 over 4: means -2 and -3; 2.0 * (-2 - -3) - 0.5 = 1.5
    logps, lengths = pairs(-20.0, -12.0)[None], pairs(10.0, 4.0)[None]
    out = pair_losses("simpo", logps, torch.full_like(logps, float("nan")), lengths, beta=2.0, gamma=0.5)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-1.5)))  # 0.201413
    assert out.losses.item() == pytest.approx(0.2014132779827524, abs=1e-12)
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == (-4.0, -6.0)
    assert simpo(pairs(-2.0), pairs(-3.0), 2.0, 0.5).losses.item() == out.losses.item()  # the reference is not read


def test_pair_losses_dispatch_reads_chosen_then_rejected_columns():
    logps, reference, lengths = pairs(-10.0, -12.0)[None], pairs(-11.0, -11.0)[None], pairs(3.0, 3.0)[None]
    assert pair_losses("dpo", logps, reference, lengths, 0.1, 0.0).losses.item() == pytest.approx(0.598138869)
    assert pair_losses("ipo", logps, reference, lengths, 0.1, 0.0).losses.item() == pytest.approx(9.0)


# --- the reference: the same model with its adapters off ------------------------------------------------------------


def test_a_lora_model_with_adapters_disabled_computes_the_original_model():
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    ids = torch.randint(0, TINY.vocab_size, (2, 12))
    with torch.no_grad():
        original = model(ids)
    parameters = sum(p.numel() for p in model.parameters())
    apply_lora(model, LoraConfig(rank=2, targets=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("lora_B"):
                param.normal_(0, 0.5)  # trained adapters: the model now computes something else
        adapted = model(ids)
        with adapters_disabled(model):
            reference = model(ids)
        again = model(ids)
    assert not torch.allclose(adapted, original, atol=1e-3)
    assert torch.equal(reference, original)
    assert torch.equal(again, adapted)  # the adapters are back after the block
    base = sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name)
    assert base == parameters  # the base weights are shared, not copied


# --- a preference step on a synthetic set ---------------------------------------------------------------------------

WORDS = ["red", "blue", "green", "stone", "river", "cloud", "lamp", "bread", "horse", "glass", "tower", "seed"]
MARKER = "ok"
"""Every chosen answer ends with it and no rejected one does: a property the starting model has no reason to prefer."""


def marker_rows(count: int, seed: int = 0) -> list[dict]:
    """Prompt, a chosen answer of random words ending with the marker word, a rejected answer of other random words."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        n = rng.randint(2, 4)
        rows.append({"prompt": f"say {n} words about {rng.choice(WORDS)} {i}",
                     "chosen": " ".join(rng.choice(WORDS) for _ in range(n)) + f" {MARKER}",
                     "rejected": " ".join(rng.choice(WORDS) for _ in range(n + 1))})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def init_folder(folder: Path) -> Path:
    """A starting model (random weights) with its tokenizer, as a pretrain step leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in marker_rows(50, seed=99)]
    tokenizer = train_bpe(texts, 300, 2, "<|endoftext|>")
    tokenizer.save(str(folder / "tokenizer.json"))
    meta = {"type": "bpe", "vocab_size": tokenizer.get_vocab_size(), "eot_id": tokenizer.token_to_id("<|endoftext|>")}
    (folder / "meta.json").write_text(json.dumps(meta))
    torch.manual_seed(0)
    save_weights(build_model(TINY), folder / "model.safetensors")
    (folder / "config.json").write_text(TINY.model_dump_json(indent=2))
    return folder


def preference_spec(data: Path, **changes) -> FinetuneSpec:
    values = dict(
        task="preference", init_model=TINY, model=TINY, dataset=DatasetConfig(path=data.name, val_fraction=0.25),
        dataset_file=str(data), chat_template=CHATML, special_tokens=CHATML_TOKENS, end_of_turn=IM_END, seq_len=48,
        labels=None, class_weighting="none", pooling="last", lora=LoraConfig(rank=4, alpha=8.0, targets=["q_proj", "v_proj", "o_proj"]),
        preference=PreferenceSpec(method="dpo", beta=0.1, gamma=0.0), optim={"lr": 1e-2, "warmup": 2}, batch_size=8,
        micro_batch_size=4, grad_accum=2, tokens_per_step=768, total_steps=30, epochs=None, eval_every=10,
        eval_batches=4, early_stopping_patience=None, checkpoint_every=10, log_every=5, device="cpu",
        precision="fp32", compile=False, seed=3)
    return FinetuneSpec.model_validate({**values, **changes})


def run_step(tmp_path: Path, name: str, spec: FinetuneSpec, reporter=None) -> tuple[dict, StepContext]:
    init = tmp_path / "init"
    if not init.is_dir():
        init_folder(init)
    ctx = StepContext(name=name, inputs={"model": init, "tokenizer": init}, out_dir=tmp_path / name / "out",
                      scratch_dir=tmp_path / name / "scratch", device="cpu", reporter=reporter or LineReporter())
    ctx.out_dir.mkdir(parents=True, exist_ok=True)
    ctx.scratch_dir.mkdir(parents=True, exist_ok=True)
    return run_preference(spec, ctx, World()), ctx
