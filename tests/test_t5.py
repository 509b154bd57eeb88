"""The T5 family: its shape rules, the Hugging Face export (logits equal to transformers'), cached decoding equal to
the full forward pass, span corruption's lengths, density and sentinels, and training with exact resume."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from llmrecipe.models.build import build_model
from llmrecipe.models.registry import family
from llmrecipe.models.shape import ModelShape
from llmrecipe.models.t5 import span_corruption_lengths
from llmrecipe.recipe.pretrain import ModelConfig

VOCAB = 300  # the tokenizer's ids; the model adds SENTINELS rows
SENTINELS = 8


def t5_shape(**changes) -> ModelShape:
    settings = dict(arch="t5", n_layer=2, n_decoder_layer=2, n_head=4, d_model=32, seq_len=32, sentinels=SENTINELS)
    settings.update(changes)
    return family("t5").shape(ModelConfig(**settings), VOCAB)


def tiny_t5(**changes) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(t5_shape(**changes)).eval()


def test_shape_takes_stack_depths_sentinel_rows_and_derived_target_length():
    shape = t5_shape(n_layer=3, n_decoder_layer=1, seq_len=128)
    assert (shape.n_layer, shape.n_decoder_layer) == (3, 1)
    assert shape.vocab_size == 320 and shape.vocab_size >= VOCAB + SENTINELS  # rounded up to a multiple of 64
    assert shape.target_len == span_corruption_lengths(128, 0.15, 3.0)[1] and not shape.tie_embeddings
    assert t5_shape(n_layer=2, n_decoder_layer=None).n_decoder_layer == 2  # n_layer serves both stacks
    assert family("t5").parameter_count(shape) == sum(p.numel() for p in build_model(shape).parameters())


def test_one_stack_families_reject_stack_depths():
    from llmrecipe.models.family import ShapeError

    with pytest.raises(ShapeError, match="n_decoder_layer"):
        family("llama").shape(ModelConfig(arch="llama", n_decoder_layer=2), 256)


def test_hugging_face_export_loads_in_transformers_with_equal_logits(tmp_path):
    pytest.importorskip("transformers")
    from transformers import T5ForConditionalGeneration

    from llmrecipe.export.hf import hf_logit_difference, write_hf_folder
    from tests.generate_helpers import save_artifact

    model = tiny_t5(n_layer=2, n_decoder_layer=3)
    save_artifact(model, tmp_path / "model")
    (tmp_path / "hf").mkdir()
    write_hf_folder(model, tmp_path / "model", tmp_path / "hf")
    assert hf_logit_difference(model, tmp_path / "hf") < 1e-4
    theirs = T5ForConditionalGeneration.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    inputs = torch.randint(0, VOCAB, (2, 9))
    mask = torch.tensor([[True] * 9, [True] * 5 + [False] * 4])  # the second row padded
    targets = torch.randint(0, VOCAB, (2, 6))
    with torch.no_grad():
        ours = model(inputs, targets, mask)
        hf = theirs(input_ids=inputs, attention_mask=mask.long(), decoder_input_ids=targets).logits
    assert (ours - hf).abs().max() < 1e-4
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["feed_forward_proj"] == "gated-gelu" and config["num_decoder_layers"] == 3


def test_cached_decoding_equals_the_full_forward_pass():
    model = tiny_t5()
    inputs = torch.randint(0, VOCAB, (2, 11))
    mask = torch.tensor([[True] * 11, [True] * 7 + [False] * 4])
    targets = torch.randint(0, VOCAB, (2, 8))
    with torch.no_grad():
        full = model(inputs, targets, mask)  # (B, T, V)
        cache = model.start_decoding(inputs, mask)
        first = model.decode(targets[:, :3], cache)  # a prompt of 3 decoder tokens, then one at a time
        steps = [model.decode(targets[:, t : t + 1], cache, last_only=True) for t in range(3, 8)]
    cached = torch.cat([first, torch.stack(steps, dim=1)], dim=1)
    assert torch.allclose(cached, full, atol=1e-5)


def test_padding_does_not_change_the_encoding_of_real_tokens():
    model = tiny_t5()
    inputs = torch.randint(0, VOCAB, (1, 6))
    padded = torch.cat([inputs, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    targets = torch.randint(0, VOCAB, (1, 4))
    with torch.no_grad():
        assert torch.allclose(model(inputs, targets), model(padded, targets, mask), atol=1e-5)


# --- span corruption --------------------------------------------------------------------------------------------

def uncorrupt(inputs: list[int], targets: list[int], top: int, eos: int) -> list[int]:
    """The original tokens back from an input and its target: each sentinel in the input replaced by its span."""
    spans, current = {}, None
    for token in targets[:-1]:
        if token > top - SENTINELS:
            current = token
            spans[current] = []
        else:
            spans[current].append(token)
    assert targets[-1] == eos and inputs[-1] == eos
    return [t for token in inputs[:-1] for t in (spans[token] if token in spans else [token])]


@pytest.mark.parametrize("seq_len,density,mean", [(32, 0.15, 3.0), (114, 0.15, 3.0), (64, 0.3, 2.0), (100, 0.5, 5.0)])
def test_span_corruption_has_the_documented_lengths_and_density(tmp_path, seq_len, density, mean):
    from llmrecipe.training.tasks.span_corruption import SpanCorruptionTask, noise_mask
    from llmrecipe.training.tasks.windows import TokenFile

    raw, target_len = span_corruption_lengths(seq_len, density, mean)
    np.arange(5000, dtype="<u2").__mod__(VOCAB - 1).tofile(tmp_path / "train.bin")  # ids below the eot id
    shape = t5_shape(seq_len=seq_len, noise_density=density, mean_span_length=mean)
    task = SpanCorruptionTask(shape, TokenFile(tmp_path / "train.bin", "uint16"), None, seed=1, batch_size=6,
                              eval_batches=1, top_sentinel_id=VOCAB + SENTINELS - 1, eos_id=VOCAB - 1)
    batch = task.train_batch(step=3, rows=range(6), micro_batch_size=6).micro_batches[0]
    assert batch["inputs"].shape == (6, seq_len) and batch["targets"].shape == (6, target_len)  # no padding
    assert (batch["decoder_inputs"][:, 1:] == batch["targets"][:, :-1]).all()
    masks = torch.stack([noise_mask(raw, density, mean, torch.Generator().manual_seed(s)) for s in range(200)])
    assert abs(masks.float().mean().item() - density) <= 0.5 / raw + 1e-9  # exactly round(raw · density) each
    starts = masks & ~torch.cat([torch.zeros(200, 1, dtype=torch.bool), masks[:, :-1]], dim=1)
    assert abs(masks.sum() / starts.sum() - mean) < 0.5 * mean  # spans of about the mean length
    assert not masks[:, 0].any() and masks[:, -1].all()  # a kept span first, a corrupted one last


def test_sentinels_are_numbered_down_from_the_top_and_round_trip(tmp_path):
    from llmrecipe.training.tasks.span_corruption import SpanCorruptionTask
    from llmrecipe.training.tasks.windows import TokenFile, step_offsets

    tokens = np.random.default_rng(0).integers(0, VOCAB - 1, 4000).astype("<u2")
    tokens.tofile(tmp_path / "train.bin")
    top, eos = VOCAB + SENTINELS - 1, VOCAB - 1
    task = SpanCorruptionTask(t5_shape(seq_len=64), TokenFile(tmp_path / "train.bin", "uint16"), None, seed=5,
                              batch_size=4, eval_batches=1, top_sentinel_id=top, eos_id=eos)
    batch = task.train_batch(step=0, rows=range(4), micro_batch_size=4).micro_batches[0]
    offsets = step_offsets(5, 0, 4, 4000, task.raw_length)
    for row, offset in enumerate(offsets.tolist()):
        inputs, targets = batch["inputs"][row].tolist(), batch["targets"][row].tolist()
        sentinels = [t for t in inputs if t > top - SENTINELS]
        assert sentinels == list(range(top, top - len(sentinels), -1))  # <extra_id_0> = top, then down
        assert uncorrupt(inputs, targets, top, eos) == tokens[offset : offset + task.raw_length].tolist()


def test_pretraining_tokenizer_names_the_sentinels():
    from llmrecipe.models.t5 import FAMILY, sentinel_token

    added = FAMILY.added_tokens(t5_shape())
    assert added[-1] == sentinel_token(0) == "<extra_id_0>" and added[0] == f"<extra_id_{SENTINELS - 1}>"


# --- training ---------------------------------------------------------------------------------------------------

def span_trainer(tmp_path: Path, name: str, reporter=None):
    from llmrecipe.plan.specs import PretrainSpec
    from llmrecipe.recipe.pretrain import OptimConfig
    from llmrecipe.steps.training import train_config
    from llmrecipe.training.tasks.span_corruption import SpanCorruptionTask
    from llmrecipe.training.tasks.windows import TokenFile
    from llmrecipe.training.trainer import Trainer
    from tests.test_training import context

    rng = np.random.default_rng(0)
    for split, n in (("train", 6000), ("val", 800)):  # a learnable stream: counting upward, some noise
        ids = (np.arange(n) + (rng.random(n) < 0.1) * rng.integers(0, 50, n)) % (VOCAB - 1)
        ids.astype("<u2").tofile(tmp_path / f"{split}.bin")
    shape = t5_shape(seq_len=32, dropout=0.1)
    spec = PretrainSpec(model=shape, optim=OptimConfig(lr=1e-2, warmup=3), batch_size=4, micro_batch_size=2,
                        grad_accum=2, tokens_per_step=4 * 32, total_steps=12, eval_every=4, eval_batches=2,
                        checkpoint_every=5, log_every=4, device="cpu", precision="fp32", compile=False, seed=3)
    task = SpanCorruptionTask(shape, TokenFile(tmp_path / "train.bin", "uint16"),
                              TokenFile(tmp_path / "val.bin", "uint16"), spec.seed, spec.batch_size,
                              spec.eval_batches, top_sentinel_id=VOCAB + SENTINELS - 1, eos_id=VOCAB - 1)
    torch.manual_seed(spec.seed)
    model = build_model(shape)
    return model, Trainer(model, task, train_config(spec, family("t5")), context(tmp_path, name, reporter))


def test_span_corruption_trains_and_resumes_byte_identically(tmp_path):
    from tests.test_training import Crash, CrashingReporter, as_bytes

    reference, trainer = span_trainer(tmp_path, "straight")
    summary = trainer.fit()
    assert summary["val_loss"] < math.log(VOCAB) - 0.5  # below guessing uniformly after 12 steps
    crashy, trainer = span_trainer(tmp_path, "crashy", CrashingReporter(after=7))
    with pytest.raises(Crash):
        trainer.fit()
    resumed, trainer = span_trainer(tmp_path, "crashy")
    trainer.fit()  # picks up at the step-5 checkpoint
    assert as_bytes(resumed) == as_bytes(reference)


# --- the recipe path --------------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_t5_recipe_pretrains_by_span_corruption_and_fine_tunes_seq2seq(tmp_path):
    from tokenizers import Tokenizer

    from llmrecipe import api
    from tests.conftest import write_tiny_recipe

    pairs = [{"prompt": f"count {i} {i + 1}", "response": f"{i + 2} {i + 3}"} for i in range(40)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    choices = [{"context": f"count {i}", "choices": [f"{i + 1}", f"{i + 5}"], "answer": 0} for i in range(4)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(c) + "\n" for c in choices))
    recipe = write_tiny_recipe(tmp_path, steps=10, checkpoint_every=5, edits=(
        ("n_layer = 2, n_head = 2", 'arch = "t5", n_layer = 2, n_head = 2, sentinels = 16'),
    ), extra=textwrap.dedent("""
        [steps.tuned]
        kind = "finetune"
        init = "base"
        task = "seq2seq"
        dataset = { path = "pairs.jsonl" }
        optim = { lr = 3e-3, warmup = 2 }
        batch_size = 4
        budget = { steps = 6 }
        eval_every = 3

        [steps.eval]
        kind = "evaluate"
        model = "tuned"
        suites = { gen = { type = "generation", data = "pairs.jsonl", limit = 4, decoding = { max_new_tokens = 4 } }, mc = { type = "multiple_choice", data = "mc.jsonl" } }
        """))
    loaded = api.load(recipe)
    plan = api.compile(loaded)
    base = plan.step("base")
    assert base.spec["model"]["target_len"] == span_corruption_lengths(32, 0.15, 3.0)[1]
    report = api.run(loaded, plan=plan)
    assert {o.name: o.state for o in report.outcomes}["tuned"] == "done"
    store = Path(plan.workdir) / "store"
    out = store / base.fingerprint
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    top = tokenizer.token_to_id("<extra_id_0>")
    assert tokenizer.token_to_id("<extra_id_15>") == top - 15 and top < base.spec["model"]["vocab_size"]
    assert tokenizer.decode([top, top - 1], skip_special_tokens=False) == "<extra_id_0><extra_id_1>"
    tuned = json.loads((store / plan.step("tuned").fingerprint / "manifest.json").read_text())["metrics"]
    assert math.isfinite(tuned["val_loss"]) and tuned["train_examples"] + tuned["val_examples"] == 40
    scores = json.loads((store / plan.step("eval").fingerprint / "manifest.json").read_text())["metrics"]
    assert 0 <= scores["gen_chrf"] <= 100 and 0 <= scores["mc_accuracy"] <= 1


# --- generation and serving ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def t5_folder(tmp_path_factory):
    from tests.generate_helpers import lively_model, save_artifact
    from tests.serve_helpers import CHAT_TEMPLATE

    return save_artifact(lively_model(t5_shape(seq_len=64)), tmp_path_factory.mktemp("t5") / "t5", CHAT_TEMPLATE)


def greedy_by_full_passes(model, prompt: list[int], start_id: int, steps: int) -> list[int]:
    """Greedy decoding without any cache: the whole decoder sequence through the model at every step."""
    out = [start_id]
    with torch.no_grad():
        for _ in range(steps):
            out.append(int(model(torch.tensor([prompt]), torch.tensor([out]))[0, -1].argmax()))
    return out[1:]


def test_generate_decodes_batches_of_different_lengths_greedily_and_by_sampling(t5_folder):
    from llmrecipe import api
    from llmrecipe.generate.artifact import end_of_text_id
    from llmrecipe.generate.sampling import SamplingParams
    from llmrecipe.models.build import load_trained

    loaded = api.open_model(t5_folder)
    engine = loaded.engine
    engine.eot_id = None  # run to max_tokens: a random model's first end-of-text would cut the comparison short
    prompts = [engine.encode("To be, or not to be"), engine.encode("A stitch"), engine.encode("The quick brown fox")]
    greedy = SamplingParams(max_tokens=7, temperature=0.0)
    batched = engine.generate(prompts, greedy)
    alone = [engine.generate([p], greedy)[0] for p in prompts]
    assert [c.token_ids for c in batched] == [c.token_ids for c in alone]  # left padding changes nothing
    model, _ = load_trained(t5_folder)
    start = end_of_text_id(engine.tokenizer)
    assert batched[0].token_ids == greedy_by_full_passes(model, prompts[0], start, 7)
    assert all(len(c.token_ids) == 7 and c.finish_reason == "length" for c in batched)  # the prompt takes no room
    sampled = SamplingParams(max_tokens=7, temperature=1.0, top_p=0.9, seed=4)
    first, again = engine.generate(prompts, sampled), engine.generate(prompts, sampled)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]  # seeded sampling repeats


def test_openai_client_completes_and_chats_with_a_t5_model(t5_folder, tmp_path):
    import openai

    from llmrecipe import api
    from llmrecipe.serve.app import ServeSettings
    from llmrecipe.serve.server import background_server
    from tests.test_serve import test_openai_client_completions_chat_and_streams as client_checks

    settings = ServeSettings(model_name="tiny", log_path=tmp_path / "serve-log.jsonl")
    with background_server(api.open_model(t5_folder), settings) as url:
        client_checks(openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0))


# --- ONNX ---------------------------------------------------------------------------------------------------------

@pytest.mark.e2e
def test_onnx_export_step_writes_encoder_and_decoder_with_past_that_match_torch(tmp_path):
    import onnx

    from llmrecipe import api
    from llmrecipe.export.onnx_seq2seq import DECODER, DECODER_WITH_PAST, ENCODER
    from llmrecipe.generate.sampling import SamplingParams
    from llmrecipe.steps import export
    from tests.generate_helpers import save_artifact
    from tests.test_evaluate_export import step_context

    model_dir = save_artifact(tiny_t5(seq_len=16), tmp_path / "model")
    out = tmp_path / "onnx"
    metrics = export.run({"format": "onnx", "opset": 18, "tolerance": 1e-4}, step_context({"model": model_dir}, out))
    assert metrics["max_abs_diff"] < 1e-4 and metrics["greedy_tokens_match"]  # checked in onnxruntime by the step
    assert {ENCODER, DECODER, DECODER_WITH_PAST, "config.json", "tokenizer.json"} <= {p.name for p in out.iterdir()}
    inputs = [i.name for i in onnx.load(str(out / DECODER_WITH_PAST)).graph.input]
    assert inputs[:3] == ["input_ids", "encoder_attention_mask", "past_key_values.0.decoder.key"]
    on_onnx, on_torch = api.open_model(out, backend="onnx"), api.open_model(model_dir)
    prompts = [on_torch.engine.encode("To be, or not"), on_torch.engine.encode("A stitch in time saves")]
    greedy = SamplingParams(max_tokens=6, temperature=0.0)
    assert ([c.token_ids for c in on_onnx.engine.generate(prompts, greedy)]
            == [c.token_ids for c in on_torch.engine.generate(prompts, greedy)])  # `generate --backend onnx`


def test_multiple_choice_scores_each_choice_by_the_decoder_given_the_encoded_context():
    from llmrecipe.evals.loglikelihood import Request, score_requests

    model = tiny_t5()
    requests = [Request([5, 6, 7, 8, 9], [11, 12]), Request([5, 6], [13, 14, 15]), Request([20], [21])]
    batched, _ = score_requests(model, requests, batch_size=3, start_id=VOCAB - 1)
    for request, score in zip(requests, batched):
        decoder = torch.tensor([[VOCAB - 1, *request.continuation_ids[:-1]]])
        with torch.no_grad():
            log_probs = model(torch.tensor([request.context_ids]), decoder).log_softmax(-1)[0]  # (T, V)
        expected = log_probs[torch.arange(len(request.continuation_ids)), request.continuation_ids].sum()
        assert score == pytest.approx(float(expected), abs=1e-4)  # padding in the batch changes nothing
