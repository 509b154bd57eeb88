"""Preference tuning (DPO, IPO, SimPO): the losses against hand-computed values, the reference as the same model
with its adapters off, pairs from JSONL rows and their mistakes, and a preference step that learns, resumes
byte-identically and keeps one copy of the weights."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from llmrecipe import api
from llmrecipe.cli import main
from llmrecipe.errors import RecipeError, StepError
from llmrecipe.finetune.chat_data import render
from llmrecipe.finetune.preference_data import Pair, SourceRows, check_usable, load_pairs, pair_of, pairs_from_rows
from llmrecipe.models.build import build_model
from llmrecipe.models.lora import adapters_disabled, apply_lora
from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.specs import FinetuneSpec, PreferenceSpec
from llmrecipe.recipe.finetune import CHAT_TEMPLATES, DatasetConfig, LoraConfig
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps.finetune import model_io
from llmrecipe.steps.finetune.preference import REFERENCE_FILE, run_preference
from llmrecipe.steps.finetune.sft import add_special_tokens
from llmrecipe.tokenizer.train import train_bpe
from llmrecipe.training.checkpoint import save_weights
from llmrecipe.training.distributed import World
from llmrecipe.training.loss import IGNORE
from llmrecipe.training.tasks.preference import PairRows, PreferenceTask, answer_log_probs
from llmrecipe.training.tasks.preference_loss import dpo, ipo, pair_losses, simpo
from tests.conftest import write_tiny_recipe
from tests.test_training import Crash, CrashingReporter

CHATML, CHATML_TOKENS, IM_END = CHAT_TEMPLATES["chatml"]
TINY = ModelShape(arch="llama", n_layer=2, n_head=2, n_kv_head=2, d_model=32, head_dim=16, ffn_hidden=64,
                  vocab_size=320, seq_len=48, dropout=0.0, rope_theta=10000.0, tie_embeddings=True)


# --- the losses ---------------------------------------------------------------------------------------------------


def column(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_dpo_equals_the_hand_computed_value():
    # log-ratios: chosen -10 - (-11) = 1, rejected -12 - (-11) = -1; h = 2; beta h = 0.2
    out = dpo(column(-10.0), column(-12.0), column(-11.0), column(-11.0), beta=0.1)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-0.2)))  # 0.598138869
    assert out.losses.item() == pytest.approx(0.598138869, abs=1e-9)
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == pytest.approx((0.1, -0.1))


def test_dpo_of_a_policy_equal_to_its_reference_is_log_2():
    out = dpo(column(-3.0, -7.0), column(-5.0, -1.0), column(-3.0, -7.0), column(-5.0, -1.0), beta=0.1)
    assert out.losses.tolist() == pytest.approx([math.log(2)] * 2)
    assert out.chosen_rewards.tolist() == out.rejected_rewards.tolist() == [0.0, 0.0]


def test_ipo_pulls_the_log_ratio_gap_to_one_over_two_beta():
    # h = 2 as above: (2 - 1 / (2 * 0.1))^2 = (2 - 5)^2 = 9; with beta 0.5 the target is 1: (2 - 1)^2 = 1
    assert ipo(column(-10.0), column(-12.0), column(-11.0), column(-11.0), beta=0.1).losses.item() == pytest.approx(9.0)
    assert ipo(column(-10.0), column(-12.0), column(-11.0), column(-11.0), beta=0.5).losses.item() == pytest.approx(1.0)
    at_target = ipo(column(-9.0), column(-11.0), column(-11.0), column(-11.0), beta=0.25)  # h = 2 = 1 / (2 * 0.25)
    assert at_target.losses.item() == 0.0


def test_simpo_uses_length_averaged_log_probs_and_a_margin():
    # summed -20 over 10 tokens and -12 over 4: means -2 and -3; 2.0 * (-2 - -3) - 0.5 = 1.5
    logps, lengths = column(-20.0, -12.0)[None], column(10.0, 4.0)[None]
    out = pair_losses("simpo", logps, torch.full_like(logps, float("nan")), lengths, beta=2.0, gamma=0.5)
    assert out.losses.item() == pytest.approx(math.log(1 + math.exp(-1.5)))  # 0.201413
    assert out.losses.item() == pytest.approx(0.2014132779827524, abs=1e-12)
    assert (out.chosen_rewards.item(), out.rejected_rewards.item()) == (-4.0, -6.0)
    assert simpo(column(-2.0), column(-3.0), 2.0, 0.5).losses.item() == out.losses.item()  # the reference is not read


def test_pair_losses_dispatch_reads_chosen_then_rejected_columns():
    logps, reference, lengths = column(-10.0, -12.0)[None], column(-11.0, -11.0)[None], column(3.0, 3.0)[None]
    assert pair_losses("dpo", logps, reference, lengths, 0.1, 0.0).losses.item() == pytest.approx(0.598138869)
    assert pair_losses("ipo", logps, reference, lengths, 0.1, 0.0).losses.item() == pytest.approx(9.0)


def test_an_answers_log_prob_sums_its_target_tokens_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)  # (N, T, V)
    targets = torch.tensor([[IGNORE, 3, 5, IGNORE], [IGNORE, IGNORE, 1, 2]])
    logps, lengths = answer_log_probs(logits, targets)
    by_hand = logits.log_softmax(-1)
    assert logps.tolist() == pytest.approx([float(by_hand[0, 1, 3] + by_hand[0, 2, 5]),
                                            float(by_hand[1, 2, 1] + by_hand[1, 3, 2])], abs=1e-6)
    assert lengths.tolist() == [2, 2]


def test_reward_metrics_keep_held_out_and_train_pairs_apart_and_count_a_tie_half():
    # held out: 4 pairs, 2 won, 1 tie; train: 2 pairs, both won
    totals = {"pairs": column(2.0, 4.0), "pair_loss": column(0.5, 2.0), "wins": column(2.0, 2.5),
              "margin": column(1.0, 0.4), "chosen_logp": column(-10.0, -40.0), "rejected_logp": column(-12.0, -44.0)}
    task = PreferenceTask(PairRows([]), None, "dpo", 0.1, 0.0, 0, 2, 1, 2)
    metrics = task.validation_metrics(totals)
    assert metrics == pytest.approx({
        "val_loss": 0.5, "val_reward_accuracy": 0.625, "val_reward_margin": 0.1, "val_chosen_logp": -10.0,
        "val_rejected_logp": -11.0, "train_reward_accuracy": 1.0, "train_reward_margin": 0.5,
        "train_chosen_logp": -5.0, "train_rejected_logp": -6.0})


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
        labels=None, class_weighting="none", pooling="last",
        lora=LoraConfig(rank=4, alpha=8.0, targets=["q_proj", "v_proj", "o_proj"]),
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


FAST = dict(total_steps=10, eval_every=5, checkpoint_every=5, eval_batches=2, optim={"lr": 2e-2, "warmup": 2})
"""Enough for the marker to be learnt (held-out reward accuracy 1.0 by step 5 on this set), with a checkpoint."""


@pytest.mark.e2e
def test_a_lora_dpo_step_learns_the_chosen_property_resumes_byte_identically_and_holds_one_model(tmp_path, monkeypatch):
    data = write_jsonl(tmp_path / "prefs.jsonl", marker_rows(64))
    spec = preference_spec(data, **FAST)
    built, copied = [], []
    real_build, real_deepcopy = model_io.build_model, copy.deepcopy
    monkeypatch.setattr(model_io, "build_model", lambda shape: built.append(shape) or real_build(shape))
    monkeypatch.setattr(copy, "deepcopy", lambda x, *a: copied.append(type(x)) if isinstance(x, torch.nn.Module)
                        else real_deepcopy(x, *a))
    summary, ctx = run_step(tmp_path, "straight", spec)
    assert len(built) == 1 and not copied  # the reference is the same model with its adapters off, not a copy
    assert summary["base_val_reward_accuracy"] == 0.5  # the policy starts as its reference: every reward is 0
    assert summary["val_reward_accuracy"] > 0.9 and summary["val_reward_margin"] > 0
    assert summary["val_chosen_logp"] > summary["base_val_chosen_logp"]
    assert summary["train_reward_accuracy"] > 0.9
    assert summary["train_pairs"] + summary["val_pairs"] == 64 and summary["val_pairs"] > 8
    assert (ctx.scratch_dir / REFERENCE_FILE).is_file()
    records = [json.loads(line) for line in (ctx.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_reward_accuracy" in r] == [5, 10]
    for name in ("model.safetensors", "adapter.safetensors", "config.json", "tokenizer.json", "chat_template.jinja",
                 "tokenizer_config.json", "loss.png", "best"):
        assert (ctx.out_dir / name).exists(), name

    with pytest.raises(Crash):
        run_step(tmp_path, "crashy", spec, CrashingReporter(after=7))
    reference_file = tmp_path / "crashy" / "scratch" / REFERENCE_FILE
    written = reference_file.stat().st_mtime_ns
    resumed, crashy = run_step(tmp_path, "crashy", spec)
    assert reference_file.stat().st_mtime_ns == written  # read back, not computed from the trained weights
    for name in ("model.safetensors", "adapter.safetensors", "best/model.safetensors"):
        assert (crashy.out_dir / name).read_bytes() == (ctx.out_dir / name).read_bytes(), name
    assert resumed["val_reward_accuracy"] == summary["val_reward_accuracy"]
    assert resumed["val_loss"] == summary["val_loss"]


@pytest.mark.parametrize("method, lora", [("ipo", False), ("simpo", True)])
def test_ipo_without_lora_and_simpo_train_and_only_methods_with_a_reference_compute_one(tmp_path, method, lora):
    data = write_jsonl(tmp_path / "prefs.jsonl", marker_rows(32))
    objective = (PreferenceSpec(method="ipo", beta=0.1, gamma=0.0) if method == "ipo"
                 else PreferenceSpec(method="simpo", beta=2.0, gamma=0.5))
    changes = {**FAST, "total_steps": 4, "eval_every": 4, "preference": objective}
    if not lora:
        changes.update(lora=None, optim={"lr": 1e-3, "warmup": 1})
    summary, ctx = run_step(tmp_path, method, preference_spec(data, **changes))
    assert (ctx.scratch_dir / REFERENCE_FILE).is_file() == (method == "ipo")
    assert math.isfinite(summary["val_loss"]) and summary["steps"] == 4
    assert summary["val_loss"] < summary["base_val_loss"]
    if method == "ipo":  # starting as its reference: h = 0, so the loss is (1 / (2 beta))^2 = 25
        assert summary["base_val_loss"] == pytest.approx(25.0, abs=1e-3)
    assert (ctx.out_dir / "adapter.safetensors").is_file() == lora


# --- rows to pairs ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    texts = [f"{r['prompt']} {r['chosen']} {r['rejected']}" for r in marker_rows(50, seed=99)]
    tokenizer = train_bpe(texts, 300, 2, "<|endoftext|>")
    add_special_tokens(tokenizer, CHATML_TOKENS, 320)
    return tokenizer


def pairs_of(tokenizer, rows: list[dict], dataset: DatasetConfig = DatasetConfig(path="p.jsonl", val_fraction=0.0),
             limit: int = 200):
    source = SourceRows(list(enumerate(rows, start=1)))
    return pairs_from_rows(source, dataset, tokenizer, CHATML, IM_END, limit, "left", "p.jsonl", "steps.prefs.dataset")


def target_text(tokenizer, example) -> str:
    return tokenizer.decode([i for i, t in zip(example.ids, example.targets) if t], skip_special_tokens=False)


def test_only_the_answers_tokens_are_targets_after_the_same_prompt(tokenizer):
    pairs, counts = pairs_of(tokenizer, [{"prompt": "say red", "chosen": "red ok", "rejected": "blue"}])
    (pair,) = pairs["train"]
    assert target_text(tokenizer, pair.chosen) == "red ok<|im_end|>"
    assert target_text(tokenizer, pair.rejected) == "blue<|im_end|>"
    prompt = tokenizer.encode(render(CHATML, [{"role": "user", "content": "say red"}], True)).ids
    assert pair.chosen.ids[: len(prompt)] == pair.rejected.ids[: len(prompt)] == prompt
    assert counts.as_metrics()["train_pairs"] == 1 and counts.as_metrics()["val_pairs"] == 0


def test_conversational_rows_with_a_prompt_or_as_two_whole_conversations_make_the_same_pair(tokenizer):
    system = {"role": "system", "content": "be brief"}
    history = [system, {"role": "user", "content": "say red"}]
    explicit = {"prompt": history, "chosen": [{"role": "assistant", "content": "red ok"}],
                "rejected": [{"role": "assistant", "content": "blue"}]}
    whole = {"chosen": history + [{"role": "assistant", "content": "red ok"}],
             "rejected": history + [{"role": "assistant", "content": "blue"}]}
    (a,), (b,) = (pairs_of(tokenizer, [row])[0]["train"] for row in (explicit, whole))
    assert a == b
    assert target_text(tokenizer, a.chosen) == "red ok<|im_end|>"
    assert pair_of(whole, DatasetConfig(path="p.jsonl"), "p.jsonl line 1") == Pair(
        history, [{"role": "assistant", "content": "red ok"}], [{"role": "assistant", "content": "blue"}])


def test_field_names_are_settable():
    dataset = DatasetConfig(path="p.jsonl", prompt_field="question", chosen_field="good", rejected_field="bad")
    pair = pair_of({"question": "q", "good": "yes", "bad": "no"}, dataset, "p.jsonl line 1")
    assert pair.prompt == [{"role": "user", "content": "q"}]
    assert pair.rejected == [{"role": "assistant", "content": "no"}]


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "chosen": "same", "rejected": "same"},
     "p.jsonl line 1: `chosen` and `rejected` are the same answer, so the pair teaches nothing; remove the row or "
     "give it a different rejected answer"),
    ({"prompt": "q", "response": "a"}, "no field 'chosen' or 'rejected'.*Set steps.prefs.dataset.chosen_field / "
     "steps.prefs.dataset.rejected_field.*looks like an SFT file"),
    ({"question": "q", "chosen": "a", "rejected": "b"}, "no field 'prompt'; with string answers the prompt must be "
     "given. Set steps.prefs.dataset.prompt_field"),
    ({"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
      "rejected": [{"role": "user", "content": "other"}, {"role": "assistant", "content": "b"}]},
     "differ before their last turn"),
    ({"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "b"},
     "`chosen` must be a string or a list of assistant messages"),
    ({"prompt": "q", "chosen": [{"role": "assistant"}], "rejected": "b"}, "every message needs a role"),
])
def test_bad_rows_are_named_with_their_line_and_the_fix(row, message):
    with pytest.raises(StepError, match=message):
        pair_of(row, DatasetConfig(path="p.jsonl"), "p.jsonl line 1", "steps.prefs.dataset")


def test_a_long_prompt_is_cut_once_for_both_answers_and_too_long_answers_are_counted_as_dropped(tokenizer):
    long_prompt = "say " + " ".join(WORDS * 3)
    rows = [{"prompt": long_prompt, "chosen": "red ok", "rejected": "blue green stone river"},
            {"prompt": "q", "chosen": " ".join(WORDS * 4), "rejected": "blue"},
            {"prompt": "q", "chosen": "red ok", "rejected": "blue"}]
    pairs, counts = pairs_of(tokenizer, rows, limit=40)
    train = counts.splits["train"]
    assert (train.intact, train.trimmed, train.dropped) == (1, 1, 1)
    trimmed = pairs["train"][0]
    assert max(len(trimmed.chosen.ids), len(trimmed.rejected.ids)) <= 40
    shared = trimmed.chosen.targets.index(True)  # the prompt: every token before the answer's first
    assert trimmed.chosen.ids[:shared] == trimmed.rejected.ids[:shared]  # one prompt, cut once
    assert target_text(tokenizer, trimmed.rejected) == "blue green stone river<|im_end|>"
    assert counts.as_metrics()["train_rows_dropped"] == 1
    assert "1 dropped of 3 rows" in counts.sentence()


def test_held_out_pairs_are_chosen_by_prompt_so_a_repeated_prompt_stays_on_one_side(tokenizer):
    rows = [{"prompt": f"say {i % 10}", "chosen": "red ok", "rejected": f"blue {i}"} for i in range(60)]
    pairs, counts = pairs_of(tokenizer, rows, DatasetConfig(path="p.jsonl", val_fraction=0.3))
    assert 0 < counts.splits["val"].rows < 60
    sides = {}
    for split in ("train", "val"):
        for pair in pairs[split]:
            prompt = tuple(pair.chosen.ids[: pair.chosen.targets.index(True)])
            sides.setdefault(prompt, set()).add(split)
    assert all(len(s) == 1 for s in sides.values()) and len(sides) == 10


def test_a_file_where_no_pair_fits_fails_saying_why(tmp_path, tokenizer):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": " ".join(WORDS * 4), "rejected": "blue"}] * 3)
    with pytest.raises(StepError, match="no usable preference pairs: all 3 train rows are longer than max_seq_len = "
                                        "20 tokens even with their prompt cut; raise max_seq_len"):
        load_pairs(data, DatasetConfig(path="p.jsonl", val_fraction=0.0), tokenizer, CHATML, IM_END, 21, "left")
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(StepError, match="empty.jsonl has no rows"):
        load_pairs(empty, DatasetConfig(path="empty.jsonl"), tokenizer, CHATML, IM_END, 21, "left")


def test_a_source_that_skips_every_row_says_why_there_are_no_pairs():
    with pytest.raises(StepError, match=r"no usable preference pairs \(dataset.format = 'pairs'\): every row was "
                                        "skipped \\(4 no correction\\)"):
        check_usable(SourceRows([], {"no_correction": 4}), "log.jsonl", DatasetConfig(path="log.jsonl"))


# --- the recipe, the plan and `validate` -----------------------------------------------------------------------------

PREFERENCE_STEP = """
[steps.prefs]
kind = "finetune"
init = "base"
task = "preference"
dataset = { path = "prefs.jsonl" }
lora = { rank = 4 }
optim = { lr = 1e-2, warmup = 2 }
batch_size = 4
budget = { steps = 6 }
eval_every = 3
precision = "fp32"
"""


def preference_recipe(folder: Path, extra: str = "", rows: list[dict] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_jsonl(folder / "prefs.jsonl", marker_rows(40) if rows is None else rows)
    # a context long enough for the chat format around words the tiny corpus's tokenizer spells out in bytes
    return write_tiny_recipe(folder, steps=10, extra=PREFERENCE_STEP + extra, edits=(("seq_len = 32", "seq_len = 96"),))


def test_the_plan_resolves_each_methods_beta_and_says_where_the_reference_comes_from(tmp_path):
    plan = api.compile(api.load(preference_recipe(tmp_path)))
    step = plan.step("prefs")
    assert step.spec["preference"] == {"method": "dpo", "beta": 0.1, "gamma": 0.0}
    assert step.derived["reference"] == ("the starting model with its adapters off: log-probs computed once before "
                                         "training")
    assert step.spec["special_tokens"] == CHATML_TOKENS  # rendered in the chat format, as sft is
    assert step.spec["tokens_per_step"] == 4 * 2 * 96  # pairs x their two sequences x max_seq_len
    simpo = api.compile(api.load(tmp_path / "recipe.toml", ['steps.prefs.method="simpo"'])).step("prefs")
    assert simpo.spec["preference"] == {"method": "simpo", "beta": 2.0, "gamma": 0.5}
    assert simpo.derived["reference"] == "none (SimPO)"
    ipo = api.compile(api.load(tmp_path / "recipe.toml", ['steps.prefs.method="ipo"', "steps.prefs.beta=0.5"]))
    assert ipo.step("prefs").spec["preference"]["beta"] == 0.5 and ipo.step("prefs").fingerprint != step.fingerprint


@pytest.mark.parametrize("overrides, message", [
    (['steps.prefs.gamma=1.0'], "gamma is SimPO's target margin; method = 'dpo' has none"),
    (['steps.prefs.task="sft"', "steps.prefs.beta=0.2"], "beta: settings of task = 'preference'; remove them"),
    (['steps.prefs.beta=0'], "steps.prefs.beta = 0: must be more than 0.0"),
    (['steps.prefs.method="ppo"'], "steps.prefs.method"),
    (['steps.prefs.dataset.format="csv"'], "steps.prefs.dataset.format"),
])
def test_preference_settings_out_of_place_are_recipe_errors(tmp_path, overrides, message):
    with pytest.raises(RecipeError, match=message):
        api.compile(api.load(preference_recipe(tmp_path), overrides))


@pytest.mark.parametrize("row, message", [
    ({"prompt": "q", "chosen": "same", "rejected": "same"},
     "steps.prefs.dataset.path: prefs.jsonl line 3: `chosen` and `rejected` are the same answer"),
    ({"prompt": "q", "chosen": "a"}, "steps.prefs.dataset.path: prefs.jsonl line 3: no field 'rejected'"),
])
def test_validate_reads_a_sample_and_refuses_bad_pairs_before_anything_runs(tmp_path, capsys, row, message):
    rows = marker_rows(2) + [row] + marker_rows(5)
    recipe = preference_recipe(tmp_path, rows=rows)
    assert main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not list(tmp_path.rglob("manifest.json"))  # not even pre-training ran


@pytest.mark.slow  # 50 s: pre-training, the preference step, evaluation and an ONNX export
@pytest.mark.e2e
def test_a_preference_recipe_runs_after_pretraining_and_its_model_chats_evaluates_and_exports(tmp_path, capsys):
    extra = ('\n[steps.eval]\nkind = "evaluate"\nmodel = "prefs"\nsuites = ["perplexity"]\n'
             '\n[steps.onnx]\nkind = "export"\nmodel = "prefs"\nformat = "onnx"\n')
    recipe = preference_recipe(tmp_path, extra)
    assert main(["run", str(recipe)]) == 0
    plan = api.compile(api.load(recipe))
    prefs = api.artifact(plan, "prefs")
    metrics = json.loads((prefs / "manifest.json").read_text())["metrics"]
    assert metrics["train_pairs"] + metrics["val_pairs"] == 40 and metrics["train_rows_dropped"] == 0
    assert metrics["base_val_reward_accuracy"] == 0.5 and 0.0 <= metrics["val_reward_accuracy"] <= 1.0
    capsys.readouterr()
    assert main(["generate", str(recipe), "prefs", "--chat", "--prompt", "say 2 words", "--max-tokens", "4",
                 "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip()  # the chat template came with the model
    assert json.loads((api.artifact(plan, "eval") / "manifest.json").read_text())["metrics"]
    assert (api.artifact(plan, "onnx") / "model.onnx").is_file()


@pytest.mark.slow  # two recipes with their pre-training; about a minute
@pytest.mark.e2e
def test_two_processes_train_a_preference_step_as_one_does(tmp_path):
    one, two = preference_recipe(tmp_path / "one"), preference_recipe(tmp_path / "two")
    two.write_text(two.read_text().replace('name = "tiny"', 'name = "tiny"\nnproc = 2'))
    metrics = []
    for path in (one, two):
        api.run(api.load(path))
        plan = api.compile(api.load(path))
        folder = api.artifact(plan, "prefs")
        records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        metrics.append(([r["loss"] for r in records if "loss" in r], load_file(folder / "adapter.safetensors")))
    (losses_one, adapters_one), (losses_two, adapters_two) = metrics
    assert len(losses_one) == len(losses_two) > 0 and losses_two == pytest.approx(losses_one, rel=1e-4, abs=1e-6)
    for name, tensor in adapters_one.items():
        assert torch.allclose(adapters_two[name], tensor, rtol=1e-4, atol=1e-4), name
