"""The `import` step: tiny random Hugging Face checkpoints of every supported family, made offline, imported,
compared with transformers' own logits, fine-tuned with LoRA and exported back (Hugging Face and ONNX)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmrecipe import api
from llmrecipe.errors import RecipeError
from llmrecipe.models.build import load_trained
from llmrecipe.models.registry import family
from llmrecipe.plan.compile import compile_plan
from llmrecipe.plan.plan import Host
from llmrecipe.steps import EXECUTOR_VERSIONS
from tests.conftest import REPO
from tests.hf_checkpoints import CHATML, CONFIGS, ENCODER_DECODERS, SENTINELS, SHARDED, hf_logits, make_checkpoint
from tests.test_finetune import write_pairs
from tests.test_training import Crash, CrashingReporter

transformers = pytest.importorskip("transformers")

DECODERS = [name for name in CONFIGS if name != "bert" and name not in ENCODER_DECODERS]
IMPORT = '[run]\nname = "imported"\ndevice = "cpu"\nworkdir = "work"\n\n[steps.base]\nkind = "import"\npath = "ckpt"\ndtype = "fp32"\n'
HF_EXPORT = '\n[steps.hf]\nkind = "export"\nmodel = "base"\nformat = "hf"\n'
ONNX_EXPORT = '\n[steps.onnx]\nkind = "export"\nmodel = "base"\nformat = "onnx"\n'
LORA_SFT = """
[steps.chat]
kind = "finetune"
init = "base"
task = "sft"
dataset = { path = "pairs.jsonl" }
lora = { rank = 4 }
optim = { lr = 3e-3, warmup = 1 }
batch_size = 4
budget = { steps = 6 }
eval_every = 3
checkpoint_every = 2
max_seq_len = 32
precision = "fp32"

[steps.chat_hf]
kind = "export"
model = "chat"
format = "hf"
"""
IDS = torch.randint(0, 300, (2, 11), generator=torch.Generator().manual_seed(0))
DECODER_IDS = torch.randint(0, 300, (2, 7), generator=torch.Generator().manual_seed(1))
"""An encoder-decoder's decoder input, beside IDS as its encoder input."""


def recipe_with(folder: Path, checkpoint: str, extra: str = HF_EXPORT, dtype: str = "float32") -> Path:
    make_checkpoint(checkpoint, folder / "ckpt", dtype)
    path = folder / "recipe.toml"
    path.write_text(IMPORT + extra)
    return path


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Checkpoint name -> the recipe (import + Hugging Face export), run once per checkpoint."""
    recipes = {}

    def run(name: str) -> Path:
        if name not in recipes:
            path = recipe_with(tmp_path_factory.mktemp(name), name)
            report = api.run(api.load(path))
            assert [o.state for o in report.outcomes] == ["done", "done"]
            recipes[name] = path
        return recipes[name]

    return run


# --- parity ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint", list(CONFIGS))
def test_imported_logits_equal_transformers_and_the_export_loads_back_as_the_same_family(imported, checkpoint):
    path = imported(checkpoint)
    plan = api.compile(api.load(path))
    model, shape = load_trained(api.artifact(plan, "base"))
    assert sum(p.numel() for p in model.parameters()) == family(shape.arch).parameter_count(shape)
    decoder_ids = DECODER_IDS if checkpoint in ENCODER_DECODERS else None
    with torch.no_grad():
        ours = model(IDS) if decoder_ids is None else model(IDS, decoder_ids)
    folder = path.parent / "ckpt"
    assert (ours - hf_logits(folder, IDS, decoder_ids)).abs().max() < 1e-4
    exported = api.artifact(plan, "hf")
    original = json.loads((folder / "config.json").read_text())["architectures"][0]
    assert json.loads((exported / "config.json").read_text())["architectures"] == [original]
    assert (ours - hf_logits(exported, IDS, decoder_ids)).abs().max() < 1e-4
    if checkpoint in ENCODER_DECODERS:  # T5's own special tokens, and its sentinels counted
        assert json.loads((exported / "tokenizer_config.json").read_text())["eos_token"] == "</s>"
        assert shape.sentinels == SENTINELS and shape.n_decoder_layer == 3
    elif checkpoint != "bert":
        assert json.loads((exported / "tokenizer_config.json").read_text())["eos_token"] == "<|im_end|>"


def test_import_keeps_no_weights_in_the_store_and_the_plan_shows_the_checkpoint(imported):
    path = imported(SHARDED)
    plan = api.compile(api.load(path))
    step = plan.step("base")
    assert step.derived["architecture"] == "llama -> llama" and step.derived["context"] == 64
    assert step.derived["dtype"] == "fp32" and step.derived["n_params"] > 0
    artifact = api.artifact(plan, "base")
    assert not list(artifact.rglob("*.safetensors"))
    reference = json.loads((artifact / "checkpoint.json").read_text())
    assert len(reference["files"]) > 1  # sharded, with an index
    assert sum(f.size for f in step.external if f.name.endswith(".safetensors")) == sum(f["size"] for f in reference["files"])
    assert (artifact / "chat_template.jinja").is_file()


def test_a_changed_checkpoint_is_a_new_plan_and_a_moved_one_an_error(tmp_path):
    path = recipe_with(tmp_path, "gpt2", extra="")
    before = api.compile(api.load(path)).step("base").fingerprint
    make_checkpoint("gpt2", tmp_path / "ckpt", seed=1)  # new weights in the same place
    assert api.compile(api.load(path)).step("base").fingerprint != before
    shutil.move(tmp_path / "ckpt", tmp_path / "elsewhere")
    with pytest.raises(RecipeError, match="no such folder"):
        api.compile(api.load(path))
    assert api.compile(api.load(path, ["steps.base.path=elsewhere"])).step("base").fingerprint != before


def test_large_files_are_hashed_once_while_their_identity_holds(tmp_path, monkeypatch):
    from llmrecipe import digests

    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(digests.CACHED_FROM_BYTES + 1))
    first = digests.cached_sha256(big)
    reads = []
    monkeypatch.setattr(digests, "sha256_file", lambda p: reads.append(p) or "stale")
    assert digests.cached_sha256(big) == first and not reads
    big.write_bytes(os.urandom(digests.CACHED_FROM_BYTES + 1))  # new content: new mtime and ctime
    assert digests.cached_sha256(big) == "stale" and reads == [big]


# --- fine-tuning ------------------------------------------------------------------------------------------------


def lora_sft(folder: Path, checkpoint: str, reporter=None):
    path = recipe_with(folder, checkpoint, extra=LORA_SFT)
    write_pairs(folder)
    return path, api.run(api.load(path), reporter=reporter)


@pytest.mark.parametrize("checkpoint", [pytest.param(n, marks=[] if n == "qwen2_tied" else pytest.mark.slow)
                                        for n in DECODERS])
def test_lora_sft_of_an_imported_model_resumes_byte_identically_and_exports_its_family(tmp_path, checkpoint):
    straight, report = lora_sft(tmp_path / "straight", checkpoint)
    assert [o.state for o in report.outcomes] == ["done"] * 3
    spec = api.compile(api.load(straight)).step("chat").spec  # the checkpoint's own chat template, no new tokens
    assert spec["chat_template"] == CHATML and spec["special_tokens"] == [] and spec["end_of_turn"] == "<|im_end|>"
    crashy = tmp_path / "crashy"
    with pytest.raises(Exception) as crash:
        lora_sft(crashy, checkpoint, CrashingReporter(after=3))
    assert crash.type is Crash or "Crash" in str(crash.value)
    api.run(api.load(crashy / "recipe.toml"))  # resumes from the checkpoint of step 2
    a, b = (api.artifact(api.compile(api.load(p)), "chat") for p in (straight, crashy / "recipe.toml"))
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    exported = api.artifact(api.compile(api.load(straight)), "chat_hf")
    original = json.loads((straight.parent / "ckpt" / "config.json").read_text())["architectures"]
    assert json.loads((exported / "config.json").read_text())["architectures"] == original
    model, _ = load_trained(a)
    with torch.no_grad():
        assert (model(IDS) - hf_logits(exported, IDS)).abs().max() < 1e-4


SEQ2SEQ = """
[steps.tuned]
kind = "finetune"
init = "base"
task = "seq2seq"
dataset = { path = "pairs.jsonl" }
optim = { lr = 3e-3, warmup = 1 }
batch_size = 4
budget = { steps = 4 }
eval_every = 2
max_seq_len = 32
precision = "fp32"

[steps.tuned_hf]
kind = "export"
model = "tuned"
format = "hf"
"""


def test_an_imported_t5_generates_as_transformers_does_and_fine_tunes_seq2seq(tmp_path):
    from llmrecipe.generate.sampling import SamplingParams

    path = recipe_with(tmp_path, "t5", extra=SEQ2SEQ)
    write_pairs(tmp_path)
    report = api.run(api.load(path))
    assert [o.state for o in report.outcomes] == ["done"] * 3
    plan = api.compile(api.load(path))
    assert torch.isfinite(torch.tensor(next(o for o in report.outcomes if o.name == "tuned").metrics["val_loss"]))
    # Greedy decoding from the decoder start T5 was trained with (its pad token), the same tokens as transformers'
    engine = api.open_model(api.artifact(plan, "base")).engine
    prompt = engine.encode("the king walks to the castle") + [engine.tokenizer.token_to_id("</s>")]
    ours = engine.generate([prompt], SamplingParams(max_tokens=6, temperature=0.0))[0].token_ids
    theirs = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / "ckpt")).eval().generate(
        # without transformers' cache, which it sizes by the encoder's layers (3 decoder layers here, 2 encoder ones)
        torch.tensor([prompt]), max_new_tokens=6, do_sample=False, use_cache=False)[0].tolist()
    assert theirs[0] == 0 and [t for t in theirs[1:] if t != 1] == [t for t in ours if t != 1] and len(ours) > 1
    # The fine-tune's loss is transformers' own (labels shifted behind decoder_start_token_id): the starting
    # model's validation loss equals transformers' on the same held-out pairs
    from tokenizers import Tokenizer

    from llmrecipe.finetune.seq2seq_data import load_pairs
    from llmrecipe.plan.specs import FinetuneSpec

    spec = FinetuneSpec.model_validate(plan.step("tuned").spec)
    tokenizer = Tokenizer.from_file(str(api.artifact(plan, "base") / "tokenizer.json"))
    pairs, _ = load_pairs(tmp_path / "pairs.jsonl", spec.dataset, tokenizer, 1, spec.seq_len)
    held = pairs["val"][: spec.eval_batches * spec.batch_size]
    checkpoint = transformers.T5ForConditionalGeneration.from_pretrained(str(tmp_path / "ckpt")).eval()
    with torch.no_grad():
        nats = sum(float(checkpoint(input_ids=torch.tensor([p.inputs]), labels=torch.tensor([p.targets])).loss)
                   * len(p.targets) for p in held)
    base_val_loss = next(o for o in report.outcomes if o.name == "tuned").metrics["base_val_loss"]
    assert abs(base_val_loss - nats / sum(len(p.targets) for p in held)) < 1e-4 * base_val_loss
    tuned = api.artifact(plan, "tuned_hf")
    assert json.loads((tuned / "config.json").read_text())["decoder_start_token_id"] == 0
    assert next(o for o in report.outcomes if o.name == "tuned_hf").metrics["max_abs_diff"] < 1e-4


def test_a_classifier_head_on_an_imported_encoder_trains(tmp_path):
    rows = [{"text": f"the king {'sings' if i % 2 else 'weeps'} of the sea", "label": "pos" if i % 2 else "neg"}
            for i in range(40)]
    (tmp_path / "labelled.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = ('\n[steps.sentiment]\nkind = "finetune"\ninit = "base"\ntask = "classify"\n'
             'dataset = { path = "labelled.jsonl" }\nbudget = { steps = 4 }\nbatch_size = 8\noptim = { lr = 1e-3, warmup = 1 }\n'
             'precision = "fp32"\n')
    path = recipe_with(tmp_path, "bert", extra=extra)
    report = api.run(api.load(path))
    assert [o.state for o in report.outcomes] == ["done", "done"]
    assert api.compile(api.load(path)).step("sentiment").spec["pooling"] == "first"  # BERT's [CLS]


def test_an_imported_decoder_is_evaluated_on_suites_with_their_own_data_and_not_on_a_corpus(tmp_path):
    rows = [{"context": "the king walks to the", "choices": ["castle", "sea"], "answer": 0}] * 4
    (tmp_path / "choices.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra = ('\n[steps.eval]\nkind = "evaluate"\nmodel = "base"\nbootstrap = 100\n'
             '[steps.eval.suites.pick]\ntype = "multiple_choice"\ndata = "choices.jsonl"\n')
    path = recipe_with(tmp_path, "mistral", extra=extra)
    report = api.run(api.load(path))
    assert "pick_accuracy" in next(o for o in report.outcomes if o.name == "eval").metrics
    path.write_text(path.read_text() + '[steps.eval.suites.ppl]\ntype = "perplexity"\nsplit = "val"\n')
    with pytest.raises(RecipeError, match="imported model with no corpus"):
        api.compile(api.load(path))


# --- ONNX -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("checkpoint", [pytest.param(n, marks=[] if n == "qwen3" else pytest.mark.slow)
                                        for n in DECODERS])
def test_onnx_export_of_an_imported_decoder_passes_its_parity_check_and_generates(tmp_path, checkpoint):
    path = recipe_with(tmp_path, checkpoint, extra=ONNX_EXPORT)
    report = api.run(api.load(path))
    onnx = next(o for o in report.outcomes if o.name == "onnx")
    assert onnx.metrics["max_abs_diff"] <= 1e-4 and onnx.metrics["greedy_tokens_match"]
    plan = api.compile(api.load(path))
    torch_model = api.open_model(api.artifact(plan, "base"))
    onnx_model = api.open_model(api.artifact(plan, "onnx"))
    assert torch_model.chat_prompt([{"role": "user", "content": "hi"}]).endswith("<|im_start|>assistant\n")
    assert onnx_model.backend == "onnx" and torch_model.backend == "torch"


@pytest.mark.slow
def test_onnx_export_of_an_imported_t5_passes_its_parity_check(tmp_path):
    path = recipe_with(tmp_path, "t5", extra=ONNX_EXPORT)
    onnx = next(o for o in api.run(api.load(path)).outcomes if o.name == "onnx")
    assert onnx.metrics["max_abs_diff"] <= 1e-4 and onnx.metrics["greedy_tokens_match"]


# --- bad input --------------------------------------------------------------------------------------------------


def plan_exit(path: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "llmrecipe", "plan", str(path)] + [a for o in overrides for a in ("--set", o)]
    return subprocess.run(args, capture_output=True, text=True, cwd=path.parent,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)


def spoil(folder: Path, how: str) -> None:
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    if how == "model_type":
        config["model_type"] = "falcon"
    elif how == "rope":
        config["rope_parameters"] = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    elif how == "no_config":
        config_path.unlink()
        return
    elif how == "no_weights":
        for weights in folder.glob("*.safetensors"):
            weights.unlink()
        return
    elif how == "tokenizer":  # 300 ids and 25 more: past the 320 embedding rows
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.add_special_tokens([f"<|extra{i}|>" for i in range(25)])
        tokenizer.save(str(folder / "tokenizer.json"))
    elif how == "shape":
        config["intermediate_size"] = 128
    elif how == "missing":
        config["num_hidden_layers"] = 3
    config_path.write_text(json.dumps(config))


@pytest.mark.parametrize("how, message", [
    ("model_type", "model_type = 'falcon' is not supported; supported: bert, gpt2, llama, mistral, qwen2, qwen3, t5"),
    ("rope", "rope type 'yarn' is not supported"),
    ("no_config", "has no config.json"),
    ("no_weights", "has no safetensors weights"),
    ("tokenizer", "the tokenizer produces ids up to 324 but the model has 320 embedding rows"),
    ("shape", "wrong shape: model.layers.0.mlp.gate_proj.weight [96, 64] (expected [128, 64])"),
    ("missing", "missing: model.layers.2.input_layernorm.weight"),
])
def test_a_checkpoint_that_cannot_be_imported_exactly_is_refused_at_plan_time(tmp_path, how, message):
    path = recipe_with(tmp_path, "qwen2_tied", extra="")
    spoil(tmp_path / "ckpt", how)
    result = plan_exit(path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("option, value, message", [
    ("feed_forward_proj", "relu", "feed_forward_proj = 'relu' is not supported for `t5` models; "
                                  "supported: 'gated-gelu'"),
    ("tie_word_embeddings", True, "tie_word_embeddings = True is not supported for `t5` models; supported: False"),
    ("relative_attention_num_buckets", 16, "relative_attention_num_buckets = 16 is not supported for `t5` models; "
                                           "supported: 32"),
])
def test_a_t5_checkpoint_other_than_v1_1_is_refused_naming_the_option(tmp_path, option, value, message):
    path = recipe_with(tmp_path, "t5", extra="")
    config_path = tmp_path / "ckpt" / "config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), option: value}))
    result = plan_exit(path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_bf16_weights_on_a_machine_without_bf16_arithmetic_are_refused(tmp_path):
    path = recipe_with(tmp_path, "gpt2", extra="", dtype="bfloat16")
    assert api.compile(api.load(path, ["steps.base.dtype=auto"])).step("base").derived["stored_dtype"] == "bf16"
    loaded = api.load(path, ["steps.base.dtype=bf16"])
    from llmrecipe.checkpoints.locate import import_checkpoints

    checkpoints, files = import_checkpoints(loaded.recipe, loaded.base_dir)
    with pytest.raises(RecipeError, match="dtype = 'bf16': this machine's CPU has no bf16 arithmetic"):
        compile_plan(loaded.recipe, workdir=str(tmp_path), host=Host(cpu_bf16=False), external=files,
                     executor_versions=EXECUTOR_VERSIONS, checkpoints=checkpoints)


def test_an_import_step_that_names_a_tokenizer_is_refused(tmp_path):
    path = recipe_with(tmp_path, "gpt2", extra="")
    path.write_text(path.read_text().replace('dtype = "fp32"', 'dtype = "fp32"\ntokenizer = "tok"'))
    result = plan_exit(path)
    assert result.returncode == 2 and "brings its own tokenizer" in result.stderr
