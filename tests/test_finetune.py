"""The finetune step: chat data and loss masks, packing isolation, special tokens, plan wiring, SFT and continue runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer

from llmrecipe import api
from llmrecipe.errors import RecipeError, StepError
from llmrecipe.finetune.chat_data import Example, assistant_spans, conversation, encode_example, load_examples, read_rows
from llmrecipe.models.registry import family
from llmrecipe.steps.finetune.model_io import adapt
from llmrecipe.steps.finetune.sft import add_special_tokens, require_targets
from llmrecipe.steps.training import train_config
from llmrecipe.training.tasks.packed import PackedRows, PackedTask, pack
from llmrecipe.training.trainer import Trainer
from llmrecipe.models.build import build_model, load_trained
from llmrecipe.models.shape import ModelShape
from llmrecipe.plan.specs import FinetuneSpec
from llmrecipe.recipe.finetune import CHAT_TEMPLATES, DatasetConfig
from llmrecipe.recipe.pretrain import OptimConfig
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.tokenizer.train import train_bpe
from tests.conftest import REPO, SHARED_DATA, write_tiny_recipe
from tests.test_training import Crash, CrashingReporter

CHATML, CHATML_TOKENS, IM_END = CHAT_TEMPLATES["chatml"]
DATASET = DatasetConfig(path="pairs.jsonl")
ALL_TRAIN = DatasetConfig(path="pairs.jsonl", val_fraction=0.0)

SFT_STEP = """
[steps.chat]
kind = "finetune"
init = "base"
task = "sft"
dataset = { path = "pairs.jsonl" }
optim = { lr = 3e-3, warmup = 2 }
batch_size = 4
budget = { steps = 10 }
eval_every = 5
precision = "fp32"
"""


def chat_tokenizer() -> Tokenizer:
    texts = ["the king speaks of the castle", "count to three: one two three", "user assistant hello"] * 20
    tokenizer = train_bpe(texts, 300, 2, "<|endoftext|>")
    add_special_tokens(tokenizer, CHATML_TOKENS, 320)
    return tokenizer


def write_pairs(folder: Path, count: int = 60, seed: int = 0) -> Path:
    """Prompt/response pairs with a learnable answer: counting up to the asked number."""
    rng = random.Random(seed)
    path = folder / "pairs.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(count):
            n = rng.randint(1, 6)
            f.write(json.dumps({"prompt": f"count to {n}", "response": " ".join(str(k) for k in range(1, n + 1))}) + "\n")
    return path


def compile_with(folder: Path, extra: str, overrides=()):
    path = write_tiny_recipe(folder, steps=20, extra=extra)
    write_pairs(folder)
    return api.compile(api.load(path, overrides))


# --- chat data and the loss mask -------------------------------------------------------------------------------


def test_only_response_tokens_and_the_end_of_turn_token_are_targets():
    tokenizer = chat_tokenizer()
    messages = conversation({"prompt": "count to three", "response": "one two three"}, DATASET, "pairs.jsonl", 1)
    text, spans = assistant_spans(CHATML, messages, IM_END, "line 1")
    example = encode_example(tokenizer, text, spans)
    targets = [i for i, t in zip(example.ids, example.targets) if t]
    assert tokenizer.decode(targets, skip_special_tokens=False) == "one two three<|im_end|>"
    assert targets[-1] == tokenizer.token_to_id(IM_END)
    assert tokenizer.decode(example.ids, skip_special_tokens=False) == text  # nothing lost in encoding


def test_every_assistant_turn_of_a_conversation_is_a_target_and_nothing_else():
    tokenizer = chat_tokenizer()
    row = {"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "one"},
                        {"role": "user", "content": "again"}, {"role": "assistant", "content": "two three"}]}
    text, spans = assistant_spans(CHATML, conversation(row, DATASET, "f", 1), IM_END, "f line 1")
    example = encode_example(tokenizer, text, spans)
    pieces, current = [], []
    for token, target in zip(example.ids, example.targets):
        if target:
            current.append(token)
        elif current:
            pieces.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    assert pieces == ["one<|im_end|>", "two three<|im_end|>"]


def test_held_out_rows_are_chosen_by_prompt_so_validation_prompts_are_unseen(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"question {i % 40}", "response": f"answer {i}"} for i in range(400)]  # each prompt 10 times
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    splits = read_rows(path, DatasetConfig(path="pairs.jsonl", val_fraction=0.2))
    prompts = {name: {row["prompt"] for _, row in splits[name]} for name in ("train", "val")}
    assert prompts["val"] and prompts["train"] and not prompts["val"] & prompts["train"]
    marked = tmp_path / "marked.jsonl"  # only train/test split values: validation still comes from train rows
    marked.write_text("".join(json.dumps({**row, "split": "train"}) + "\n" for row in rows))
    assert read_rows(marked, DatasetConfig(path="marked.jsonl", val_fraction=0.2))["val"]


@pytest.mark.parametrize("row, message", [
    ({"prompt": "hi", "answer": "yo"}, "no string field 'response'"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "needs a role"),
    ({"prompt": "hi", "response": "yo", "split": "dev"}, "split = 'dev'"),
])
def test_rows_that_do_not_fit_the_template_fail_before_training_naming_the_line(tmp_path, row, message):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(StepError, match=message) as error:
        load_examples(path, DATASET, chat_tokenizer(), CHATML, IM_END)
    assert "line 2" in str(error.value)


def test_a_template_that_never_emits_the_end_of_turn_token_is_refused(tmp_path):
    path = write_pairs(tmp_path, count=3)
    no_end = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(StepError, match="does not put end_of_turn"):
        load_examples(path, DATASET, chat_tokenizer(), no_end, IM_END)


def test_special_tokens_are_single_ids_and_round_trip_through_a_saved_tokenizer(tmp_path):
    tokenizer = train_bpe(["plain words only"] * 10, 300, 2, "<|endoftext|>")
    before = tokenizer.get_vocab_size(with_added_tokens=True)
    new_ids = add_special_tokens(tokenizer, CHATML_TOKENS, 320)
    assert new_ids == [before, before + 1]
    assert add_special_tokens(tokenizer, CHATML_TOKENS, 320) == []  # already there: nothing added twice
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    loaded = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = "<|im_start|>user\nplain words<|im_end|>\n"
    ids = loaded.encode(text).ids
    assert ids[0] == new_ids[0] and new_ids[1] in ids
    assert loaded.decode(ids, skip_special_tokens=False) == text
    assert loaded.encode("plain words only").ids == tokenizer.encode("plain words only").ids


# --- fitting long conversations into max_seq_len ------------------------------------------------------------------


def long_rows(path: Path, prompt_words: int, count: int = 6, response: str = "one two three") -> Path:
    words = ("the king speaks of the castle " * prompt_words).split()[:prompt_words]
    rows = [{"prompt": f"question {i}: " + " ".join(words), "response": response} for i in range(count)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def targets_text(tokenizer: Tokenizer, example: Example) -> str:
    return tokenizer.decode([i for i, t in zip(example.ids, example.targets) if t], skip_special_tokens=False)


def test_a_long_prompt_is_trimmed_from_the_left_so_the_response_and_the_markers_stay(tmp_path):
    tokenizer, limit = chat_tokenizer(), 33
    path = long_rows(tmp_path / "long.jsonl", prompt_words=40)
    examples, counts = load_examples(path, ALL_TRAIN, tokenizer, CHATML, IM_END, limit, "left")
    assert (counts["train"].intact, counts["train"].trimmed, counts["train"].dropped) == (0, 6, 0)
    for example in examples["train"]:
        assert len(example.ids) <= limit
        assert targets_text(tokenizer, example) == "one two three<|im_end|>"  # the whole response is trained on
        text = tokenizer.decode(example.ids, skip_special_tokens=False)
        assert text.startswith("<|im_start|>user\n") and "<|im_end|>\n<|im_start|>assistant\n" in text
        assert "question" not in text and "speaks of<|im_end|>" in text  # the prompt's start went, its end stayed
    untrimmed, _ = load_examples(path, ALL_TRAIN, tokenizer, CHATML, IM_END)
    assert counts["train"].target_tokens == sum(sum(e.targets[1:]) for e in untrimmed["train"])


def test_earlier_turns_go_first_and_the_system_message_stays(tmp_path):
    tokenizer = chat_tokenizer()
    long = " ".join(["the castle"] * 30)
    row = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": long},
                        {"role": "assistant", "content": long}, {"role": "user", "content": "count to three"},
                        {"role": "assistant", "content": "one two three"}]}
    path = tmp_path / "turns.jsonl"
    path.write_text(json.dumps(row) + "\n")
    examples, counts = load_examples(path, ALL_TRAIN, tokenizer, CHATML, IM_END, 40, "left")
    assert counts["train"].trimmed == 1
    text = tokenizer.decode(examples["train"][0].ids, skip_special_tokens=False)
    assert text == ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\ncount to three<|im_end|>\n"
                    "<|im_start|>assistant\none two three<|im_end|>\n")


def test_drop_leaves_out_over_long_rows_and_a_response_too_long_is_dropped_either_way(tmp_path):
    tokenizer = chat_tokenizer()
    path = long_rows(tmp_path / "long.jsonl", prompt_words=40, count=4)
    with open(path, "a") as f:
        f.write(json.dumps({"prompt": "hi", "response": "count to three"}) + "\n")
        f.write(json.dumps({"prompt": "hi", "response": " ".join(["castle"] * 60)}) + "\n")
    _, dropped = load_examples(path, ALL_TRAIN, tokenizer, CHATML, IM_END, 33, "drop")
    assert (dropped["train"].intact, dropped["train"].trimmed, dropped["train"].dropped) == (1, 0, 5)
    _, left = load_examples(path, ALL_TRAIN, tokenizer, CHATML, IM_END, 33, "left")
    assert (left["train"].intact, left["train"].trimmed, left["train"].dropped) == (1, 4, 1)
    assert left["train"].as_metrics("train") == {"train_rows_intact": 1, "train_rows_prompt_trimmed": 4,
                                                 "train_rows_dropped": 1,
                                                 "train_target_tokens": left["train"].target_tokens}


def test_an_sft_step_where_most_rows_lose_their_response_fails_naming_max_seq_len(tmp_path):
    path = long_rows(tmp_path / "long.jsonl", prompt_words=40, count=6)
    spec = tiny_sft_spec(seq_len=32, dataset_file=str(path), truncation="drop")
    _, counts = load_examples(path, ALL_TRAIN, chat_tokenizer(), CHATML, IM_END, 33, "drop")
    with pytest.raises(StepError) as error:
        require_targets(counts["train"], spec)
    message = str(error.value)
    assert "only 0 of 6 train rows keep a response within max_seq_len = 32" in message
    assert "0 intact, 0 prompt-trimmed, 6 dropped" in message and 'truncation = "left"' in message
    _, kept = load_examples(path, ALL_TRAIN, chat_tokenizer(), CHATML, IM_END, 33, "left")
    require_targets(kept["train"], spec.model_copy(update={"truncation": "left"}))  # all 6 keep it: no error


def test_an_empty_sft_file_is_blamed_on_the_file_not_the_split(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    with pytest.raises(StepError, match="empty.jsonl has no rows: the file is empty"):
        load_examples(path, ALL_TRAIN, chat_tokenizer(), CHATML, IM_END)


# --- packing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_an_example_has_the_same_logits_packed_with_others_as_alone(arch):
    shape = ModelShape(arch=arch, n_layer=2, n_head=2, n_kv_head=2, d_model=32, head_dim=16, ffn_hidden=64,
                       vocab_size=64, seq_len=24, dropout=0.0, rope_theta=10000.0, tie_embeddings=True)
    torch.manual_seed(0)
    model = build_model(shape).eval()
    generator = torch.Generator().manual_seed(1)
    examples = [Example(ids=torch.randint(1, 64, (n,), generator=generator).tolist(), targets=[True] * n)
                for n in (7, 5, 9)]
    packed = pack(examples, seq_len=24)
    assert len(packed) == 1  # all three share one row: 6 + 4 + 8 positions
    row = packed.rows(torch.tensor([0]))
    with torch.no_grad():
        together = model(row["inputs"], PackedRows(row["positions"], row["documents"]))[0]  # (T, V)
        start = 0
        for example in examples:
            alone = model(torch.tensor([example.ids[:-1]]))[0]  # (n - 1, V)
            assert (together[start : start + len(alone)] - alone).abs().max() < 1e-5
            start += len(alone)


def test_packing_shifts_targets_within_each_example():
    examples = [Example(ids=[1, 2, 3], targets=[False, True, True]), Example(ids=[4, 5], targets=[False, True])]
    packed = pack(examples, seq_len=6)
    assert packed.inputs[0].tolist() == [1, 2, 4, 0, 0, 0]
    assert packed.targets[0].tolist() == [2, 3, 5, -100, -100, -100]  # 2 never predicts 4 across the boundary
    assert packed.positions[0].tolist()[:3] == [0, 1, 0]


# --- the SFT loop ----------------------------------------------------------------------------------------------


def tiny_sft_spec(**changes) -> FinetuneSpec:
    shape = ModelShape(arch="llama", n_layer=2, n_head=2, n_kv_head=2, d_model=32, head_dim=16, ffn_hidden=64,
                       vocab_size=64, seq_len=16, dropout=0.0, rope_theta=10000.0, tie_embeddings=True)
    values = dict(task="sft", init_model=shape, model=shape, dataset=DATASET, dataset_file=None, chat_template=CHATML,
                  special_tokens=CHATML_TOKENS, end_of_turn=IM_END, seq_len=16, labels=None, class_weighting="none",
                  pooling="last", lora=None, optim=OptimConfig(lr=3e-3, warmup=2), batch_size=4, micro_batch_size=2,
                  grad_accum=2, tokens_per_step=64, total_steps=12, epochs=None, eval_every=4, eval_batches=2,
                  early_stopping_patience=None, checkpoint_every=5, log_every=2, device="cpu", precision="fp32",
                  compile=False, seed=3)
    return FinetuneSpec(**{**values, **changes})


def synthetic_packs():
    """Counting sequences: an 'answer' continues the prompt's count; the answer part is the target."""
    generator = random.Random(0)
    examples = []
    for _ in range(40):
        start, length = generator.randint(1, 40), generator.randint(4, 9)
        ids = [(start + k) % 60 + 1 for k in range(length)]
        examples.append(Example(ids=ids, targets=[k >= 2 for k in range(length)]))
    return pack(examples[:32], 16), pack(examples[32:], 16)


def sft_once(tmp_path: Path, name: str, spec: FinetuneSpec, reporter=None) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(spec.seed)
    model = build_model(spec.model)
    adapt(model, spec, new_ids=[62, 63])  # the last rows play the added tokens' part
    ctx = StepContext(name=name, inputs={}, out_dir=tmp_path / name / "out", scratch_dir=tmp_path / name / "scratch",
                      device="cpu", reporter=reporter or LineReporter())
    ctx.scratch_dir.mkdir(parents=True, exist_ok=True)
    train, val = synthetic_packs()
    task = PackedTask(train, val, spec.seed, spec.batch_size, spec.eval_batches, spec.micro_batch_size)
    return model, Trainer(model, task, train_config(spec, family(spec.model.arch), score_start=True), ctx).fit()


def crash_and_resume(tmp_path: Path, spec: FinetuneSpec, crash_after: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference, _ = sft_once(tmp_path, "straight", spec)
    with pytest.raises(Crash):
        sft_once(tmp_path, "crashy", spec, CrashingReporter(after=crash_after))
    resumed, _ = sft_once(tmp_path, "crashy", spec)  # the same scratch folder: continues from its checkpoint
    return reference, resumed


@pytest.mark.e2e
def test_sft_loop_learns_and_reports_the_starting_loss(tmp_path):
    _, summary = sft_once(tmp_path, "learn", tiny_sft_spec(total_steps=30))
    assert summary["best_val_loss"] < summary["base_val_loss"] - 0.5


def test_sft_stops_early_when_validation_loss_stops_improving(tmp_path):
    frozen = OptimConfig(name="sgd", lr=1e-12, warmup=0)  # the weights barely move: no evaluation beats the first
    _, summary = sft_once(tmp_path, "early", tiny_sft_spec(optim=frozen, eval_every=1, early_stopping_patience=1))
    assert summary["stopped_early"] and summary["steps"] == 2


@pytest.mark.e2e
def test_full_sft_run_killed_midway_resumes_byte_identical(tmp_path):
    reference, resumed = crash_and_resume(tmp_path, tiny_sft_spec(), crash_after=7)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# --- plan wiring -----------------------------------------------------------------------------------------------


def test_plan_chains_finetune_after_its_init_and_grows_the_vocabulary(tmp_path):
    plan = compile_with(tmp_path, SFT_STEP + '\n[steps.eval]\nkind = "evaluate"\nmodel = "chat"\nsuites = ["perplexity"]\n'
                        '\n[steps.hf]\nkind = "export"\nmodel = "chat"\nformat = "hf"\n')
    chat = plan.step("chat")
    assert chat.inputs == {"model": "base", "tokenizer": "tok"}
    assert chat.derived["vocab_size"] == 320  # 300 ids + 2 new tokens, rounded up to 64
    assert chat.spec["chat_template"] == CHATML and chat.spec["end_of_turn"] == IM_END
    assert plan.step("eval").inputs["tokenizer"] == "chat"  # the tokenizer with the added tokens
    assert [s.name for s in plan.steps].index("chat") < [s.name for s in plan.steps].index("hf")


def test_the_dataset_content_is_in_the_fingerprint_and_its_location_is_not(tmp_path):
    before = {s.name: s.fingerprint for s in compile_with(tmp_path / "a", SFT_STEP).steps}
    elsewhere = {s.name: s.fingerprint for s in compile_with(tmp_path / "b", SFT_STEP).steps}
    assert before == elsewhere
    write_pairs(tmp_path / "a", seed=1)
    after = {s.name: s.fingerprint for s in api.compile(api.load(tmp_path / "a" / "recipe.toml")).steps}
    assert after["chat"] != before["chat"] and after["base"] == before["base"]


def test_continue_gets_an_implicit_tokenize_step_with_the_init_models_tokenizer(tmp_path):
    extra = ('\n[steps.domain]\nkind = "finetune"\ninit = "base"\ntask = "continue"\ndata = "corpus"\n'
             'budget = { steps = 5 }\noptim = { warmup = 1 }\nbatch_size = 2\n')
    plan = compile_with(tmp_path, extra)
    assert plan.step("domain").inputs == {"model": "base", "tokenizer": "tok", "tokens": "corpus@tok"}


@pytest.mark.parametrize("extra, message", [
    ('\n[steps.x]\nkind = "finetune"\ninit = "corpus"\ntask = "sft"\ndataset = { path = "pairs.jsonl" }\n'
     'budget = { steps = 5 }\n', "name a pretrain or import or finetune step"),
    ('\n[steps.x]\nkind = "finetune"\ninit = "base"\ntask = "sft"\nbudget = { steps = 5 }\n', "needs its examples"),
    ('\n[steps.x]\nkind = "finetune"\ninit = "base"\ntask = "continue"\nbudget = { steps = 5 }\n', "give `data"),
    ('\n[steps.x]\nkind = "finetune"\ninit = "base"\ntask = "sft"\ndataset = { path = "nope.jsonl" }\n'
     'budget = { steps = 5 }\n', "steps.x.dataset.path = 'nope.jsonl': no such file"),
    ('\n[steps.x]\nkind = "finetune"\ninit = "base"\ntask = "sft"\ndataset = { path = "pairs.jsonl" }\n'
     'max_seq_len = 64\nbudget = { steps = 5 }\n', "longer than the init model's seq_len"),
    ('\n[steps.cls]\nkind = "finetune"\ninit = "base"\ntask = "classify"\ndataset = { path = "pairs.jsonl" }\nbudget = { steps = 50 }\n[steps.x]\nkind = "finetune"\ninit = "cls"\ntask = "sft"\ndataset = { path = "pairs.jsonl" }\n'
     'budget = { steps = 5 }\n', "start from its init step 'base'"),
    ('\n[steps.cls]\nkind = "finetune"\ninit = "base"\ntask = "classify"\ndataset = { path = "pairs.jsonl" }\nbudget = { steps = 50 }\npooling = "first"\n', "pooling = 'first' on a `llama` decoder"),
    ('\n[steps.cls]\nkind = "finetune"\ninit = "base"\ntask = "classify"\ndataset = { path = "pairs.jsonl" }\nbudget = { steps = 50 }\nlora = { targets = ["q_proj", "lm_head"] }\n', "replaces `lm_head` by its head"),
])
def test_recipe_mistakes_in_a_finetune_step_are_recipe_errors(tmp_path, extra, message):
    with pytest.raises(RecipeError, match=message):
        compile_with(tmp_path, extra)


def test_chat_recipe_compiles_with_its_sft_step_and_sample_answers():
    if not (SHARED_DATA / "sft" / "chatterbot.jsonl").is_file():
        pytest.skip("../shared/data is not there")
    plan = api.compile(api.load(REPO / "recipes" / "chat.toml"))
    assert plan.step("chat").kind == "finetune" and plan.step("chat").spec["task"] == "sft"
    assert plan.step("answers").inputs["model"] == "chat"


# --- end to end ------------------------------------------------------------------------------------------------


CHAIN = SFT_STEP + 'lora = { rank = 4, merge = false }\n' + (
    '\n[steps.domain]\nkind = "finetune"\ninit = "chat"\ntask = "continue"\ndata = "corpus"\n'
    'budget = { steps = 4 }\noptim = { warmup = 1 }\nbatch_size = 2\nprecision = "fp32"\n')


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    """pretrain -> sft with unmerged LoRA -> continue, run once for the tests below; the recipe's path."""
    folder = tmp_path_factory.mktemp("chain")
    path = write_tiny_recipe(folder, steps=10, extra=CHAIN)
    write_pairs(folder)
    report = api.run(api.load(path))
    assert [o.state for o in report.outcomes] == ["done"] * 6
    return path


@pytest.mark.e2e
def test_sft_with_unmerged_lora_then_continue_end_to_end(chain):
    plan = api.compile(api.load(chain))
    chat = api.artifact(plan, "chat")
    for name in ("model.safetensors", "adapter.safetensors", "tokenizer.json", "meta.json", "chat_template.jinja",
                 "tokenizer_config.json", "metrics.jsonl", "loss.png", "best"):
        assert (chat / name).exists(), name
    records = [json.loads(line) for line in (chat / "metrics.jsonl").read_text().splitlines()]
    assert any("val_loss" in r for r in records)
    metrics = json.loads((chat / "manifest.json").read_text())["metrics"]
    counted = [metrics[f"{split}_rows_{outcome}"] for split in ("train", "val")
               for outcome in ("intact", "prompt_trimmed", "dropped")]
    assert sum(counted) == 60 and metrics["train_rows_dropped"] == metrics["val_rows_dropped"] == 0
    assert metrics["train_target_tokens"] > metrics["train_rows_intact"]
    loaded_model = api.open_model(chat)  # the unmerged adapters are merged on load
    assert loaded_model.engine.eot_id == Tokenizer.from_file(str(chat / "tokenizer.json")).token_to_id(IM_END)
    assert loaded_model.chat_prompt([{"role": "user", "content": "count to 2"}]).endswith("<|im_start|>assistant\n")
    domain = api.artifact(plan, "domain")
    assert (domain / "chat_template.jinja").is_file()  # continued training keeps the chat format
    _, shape = load_trained(domain)
    assert shape.vocab_size == 320


@pytest.mark.slow
def test_an_unmerged_lora_chat_model_exports_merged_to_hugging_face_with_its_template(chain):
    pytest.importorskip("transformers")
    path = chain.parent / "export.toml"
    path.write_text(chain.read_text() + '\n[steps.hf]\nkind = "export"\nmodel = "chat"\nformat = "hf"\n')
    loaded = api.load(path)
    report = api.run(loaded)  # only the export runs: the rest is in the store
    hf = next(o for o in report.outcomes if o.name == "hf")
    assert hf.metrics["max_abs_diff"] < 1e-4  # transformers' logits of the merged weights equal ours
    config = json.loads((api.artifact(api.compile(loaded), "hf") / "tokenizer_config.json").read_text())
    assert config["eos_token"] == IM_END and config["chat_template"] == CHATML
