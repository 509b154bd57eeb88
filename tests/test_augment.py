"""Augmentation ops: deterministic in (seed, row), counted, balanced by `oversample`, applied to train rows only, and
part of the finetune step's identity."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import TypeAdapter

from llmrecipe import api
from llmrecipe.errors import RecipeError
from llmrecipe.finetune.augment import _char_noise, _eda, augment
from llmrecipe.finetune.chat_data import conversations, user_turns, with_user_turns
from llmrecipe.finetune.classify_data import Example
from llmrecipe.models.build import build_model
from llmrecipe.recipe.augment import AugmentOp
from llmrecipe.recipe.finetune import DatasetConfig
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps.finetune.classify import run_classify
from llmrecipe.steps.finetune.sft import run_sft
from llmrecipe.training.distributed import World
from tests.test_classify import SHAPE, labelled_rows, make_spec, tokenizer, write_jsonl  # noqa: F401
from tests.test_evaluate_export import save_model_folder

OPS = TypeAdapter(list[AugmentOp])


def ops(*tables: dict) -> list:
    return OPS.validate_python(list(tables))


def examples(count: int) -> list[Example]:
    return [Example(text=row["text"], label=row["label"], line=i + 1) for i, row in enumerate(labelled_rows(count))]


def run(rows: list[Example], op_list: list, seed: int = 5):
    return augment(rows, op_list, seed, lambda e: [e.text], lambda e, texts: replace(e, text=texts[0]),
                   lambda e: e.label)


def test_the_same_seed_gives_the_same_rows_and_a_rows_copies_do_not_depend_on_the_other_rows():
    rows = examples(30)
    pipeline = ops({"op": "eda", "rate": 0.2, "copies": 2}, {"op": "char_noise", "rate": 0.1})
    first, _ = run(rows, pipeline)
    assert run(rows, pipeline)[0] == first
    assert run(rows, pipeline, seed=6)[0] != first
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    made_by_source = lambda out: sorted((e.line, e.text) for e in out)  # noqa: E731
    assert made_by_source(run(shuffled, pipeline)[0]) == made_by_source(first)  # order and neighbours change nothing
    alone, _ = run(rows[:1], ops({"op": "eda", "rate": 0.2, "copies": 2}))
    assert [e.text for e in alone[1:]] == [e.text for e in first[30:] if e.line == 1][:2]


def test_rows_made_are_counted_by_op_and_keep_their_source_line():
    rows = examples(10)
    out, stats = run(rows, ops({"op": "eda", "copies": 2}, {"op": "char_noise", "rate": 0.2}))
    assert out[:10] == rows  # the originals stay, first and unchanged
    assert stats.made == {"eda": 20, "char_noise": 30}  # char_noise reads the originals and eda's copies
    assert stats.rows_out == len(out) == 60
    assert stats.as_metrics() == {"augment_rows_in": 10, "augment_eda_rows_made": 20,
                                  "augment_char_noise_rows_made": 30, "augment_rows_out": 60}
    assert Counter(e.line for e in out) == {line: 6 for line in range(1, 11)}
    assert "10 in, eda made 20, char_noise made 30; 60 out" in stats.sentence()


def test_oversample_balances_the_labels_before_repeating_any_row_twice():
    rows = [Example(f"good {i}", "pos", i) for i in range(10)] + [Example(f"bad {i}", "neg", 10 + i) for i in range(3)]
    out, stats = run(rows, ops({"op": "oversample"}))
    assert Counter(e.label for e in out) == {"pos": 10, "neg": 10} and stats.made == {"oversample": 7}
    repeats = Counter(e.line for e in out[13:])
    assert sorted(repeats.values()) == [2, 2, 3]  # 7 = 3 + 3 + 1: every row once more before any a third time
    out, _ = run(rows, ops({"op": "oversample", "target": 0.45}))
    assert Counter(e.label for e in out) == {"pos": 10, "neg": 5}  # ceil(0.45 x 10)
    with pytest.raises(ValueError, match="oversample balances labels"):
        augment(rows, ops({"op": "oversample"}), 0, lambda e: [e.text], lambda e, t: e)


def test_eda_reuses_the_texts_own_words_and_char_noise_makes_typos_at_about_its_rate():
    text = "the quick brown fox jumps over the lazy dog near the river bank"
    words = set(text.split())
    for seed in range(200):
        altered = _eda(text, 0.2, np.random.default_rng(seed))
        assert set(altered.split()) <= words and altered.split()
    assert _eda("", 0.3, np.random.default_rng(0)) == ""
    clean = "abcdefghij" * 40
    edits = [edit_distance(clean, _char_noise(clean, 0.05, np.random.default_rng(seed))) for seed in range(10)]
    assert 0.03 < sum(edits) / (10 * len(clean)) < 0.1  # ~5% of letters hit, a swap costs two edits, others one
    assert _char_noise("... !!", 1.0, np.random.default_rng(0)) == "... !!"  # only letters and digits get typos


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, start=1):
        current = [i]
        for j, other in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char != other)))
        previous = current
    return previous[-1]


def test_sft_augmentation_alters_user_turns_and_keeps_the_responses(tmp_path):
    rows = [{"prompt": f"please tell me about topic number {i} today", "response": f"answer {i} stays"}
            for i in range(6)]
    rows.append({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there you"},
                              {"role": "assistant", "content": "hello"}]})
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    train = conversations(path, DatasetConfig(path="chat.jsonl", val_fraction=0.0))["train"]
    out, stats = augment(train, ops({"op": "char_noise", "rate": 0.3}), 1, user_turns, with_user_turns)
    assert stats.made == {"char_noise": 7}
    for (number, original), (same_number, noisy) in zip(train, out[7:]):
        assert number == same_number
        assert [m for m in noisy if m["role"] != "user"] == [m for m in original if m["role"] != "user"]
    assert sum(user_turns(a) != user_turns(b) for a, b in zip(train, out[7:])) >= 5


def test_the_classify_step_augments_train_rows_only_and_reports_the_counts(tmp_path, tokenizer):  # noqa: F811
    rows = [{**row, "split": "test" if i >= 30 else "train"} for i, row in enumerate(labelled_rows(36))]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    (tmp_path / "tok").mkdir()
    tokenizer.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "tok" / "meta.json").write_text(json.dumps({"type": "char", "vocab_size": 300, "eot_id": 0}))
    torch.manual_seed(0)
    inputs = {"model": save_model_folder(build_model(SHAPE), tmp_path / "init"), "tokenizer": tmp_path / "tok"}

    def classify(name: str, augment_ops: list[dict]) -> dict:
        ctx = StepContext(name=name, inputs=inputs, out_dir=tmp_path / name / "out",
                          scratch_dir=tmp_path / name / "scratch", device="cpu", reporter=LineReporter())
        ctx.out_dir.mkdir(parents=True)
        ctx.scratch_dir.mkdir()
        dataset = {"path": "d.jsonl", "val_fraction": 0.2, "augment": augment_ops}
        return run_classify(make_spec(dataset=dataset, dataset_file=str(data), total_steps=2), ctx, World())

    summary, plain = classify("augmented", [{"op": "eda", "copies": 2}]), classify("plain", [])
    assert summary["val_examples"] == plain["val_examples"] > 0  # validation rows are never augmented
    train = plain["train_examples"]
    assert summary["augment_rows_in"] == train and summary["augment_eda_rows_made"] == 2 * train
    assert summary["train_examples"] == summary["augment_rows_out"] == 3 * train
    assert "augment_rows_in" not in plain


def test_augment_enters_the_fingerprint_and_misplaced_ops_are_recipe_errors(tmp_path):
    from tests.test_classify import classify_recipe

    recipe = classify_recipe(tmp_path)
    plain = api.compile(api.load(recipe)).step("clf")
    set_ops = 'steps.clf.dataset.augment=[{op="eda", rate=0.1}]'
    augmented = api.compile(api.load(recipe, [set_ops])).step("clf")
    assert augmented.fingerprint != plain.fingerprint
    assert augmented.spec["dataset"]["augment"] == [{"op": "eda", "rate": 0.1, "copies": 1}]
    base = api.compile(api.load(recipe)).step("base").fingerprint
    assert api.compile(api.load(recipe, [set_ops])).step("base").fingerprint == base
    with pytest.raises(RecipeError, match="only task = 'classify' has"):
        api.load(recipe, ['steps.clf.task="sft"', 'steps.clf.dataset.augment=[{op="oversample"}]'])
    with pytest.raises(RecipeError, match="op"):
        api.load(recipe, ['steps.clf.dataset.augment=[{op="back_translate"}]'])



def test_the_sft_step_augments_train_rows_only_and_reports_the_counts(tmp_path):
    from tests.test_finetune import CHATML_TOKENS, tiny_sft_spec, write_pairs
    from tests.test_finetune import chat_tokenizer as tokenizer_with_chatml

    tokenizer = tokenizer_with_chatml()
    (tmp_path / "tok").mkdir()
    tokenizer.save(str(tmp_path / "tok" / "tokenizer.json"))
    (tmp_path / "tok" / "meta.json").write_text(json.dumps({"type": "bpe", "vocab_size": 300,
                                                            "eot_id": tokenizer.token_to_id("<|endoftext|>")}))
    shape = tiny_sft_spec().model.model_copy(update={"vocab_size": 320})
    torch.manual_seed(0)
    inputs = {"model": save_model_folder(build_model(shape), tmp_path / "init"), "tokenizer": tmp_path / "tok"}
    data = write_pairs(tmp_path, count=30)

    def sft(name: str, augment_ops: list[dict]) -> dict:
        ctx = StepContext(name=name, inputs=inputs, out_dir=tmp_path / name / "out",
                          scratch_dir=tmp_path / name / "scratch", device="cpu", reporter=LineReporter())
        ctx.out_dir.mkdir(parents=True)
        ctx.scratch_dir.mkdir()
        dataset = DatasetConfig(path="pairs.jsonl", val_fraction=0.3, augment=OPS.validate_python(augment_ops))
        spec = tiny_sft_spec(init_model=shape, model=shape, dataset=dataset, dataset_file=str(data), total_steps=2,
                             special_tokens=CHATML_TOKENS)
        return run_sft(spec, ctx, World())

    summary, plain = sft("augmented", [{"op": "char_noise", "rate": 0.2, "copies": 2}]), sft("plain", [])
    assert summary["val_examples"] == plain["val_examples"] > 0  # validation rows are never augmented
    rows = lambda s: s["train_rows_intact"] + s["train_rows_prompt_trimmed"] + s["train_rows_dropped"]  # noqa: E731
    assert summary["augment_rows_in"] == rows(plain) and summary["augment_char_noise_rows_made"] == 2 * rows(plain)
    assert rows(summary) == summary["augment_rows_out"] == 3 * rows(plain)  # then fitted like every row
    assert summary["val_target_tokens"] == plain["val_target_tokens"]
