"""Evaluation (perplexity, bits per byte, unigram bar, sampling) and ONNX export, on tiny random models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from llmrecipe.errors import StepError
from llmrecipe.evals.perplexity import score_stream, unigram_baseline, windows
from llmrecipe.evals.decoding import complete, suite_engine
from llmrecipe.export.onnx import export_onnx
from llmrecipe.generate.sampling import SamplingParams
from llmrecipe.models.build import build_model, load_trained
from llmrecipe.models.shape import ModelShape
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.tokenizer.train import train_bpe

SEQ_LEN = 16
EOT = "<|endoftext|>"
DOCUMENTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A stitch in time saves nine; look before you leap.",
    "Every good boy deserves fruit, and every cat likes fish.",
    "To be, or not to be, that is the question.",
    "All that glitters is not gold; fortune favours the bold.",
    "Rain in Spain stays mainly in the plain. ünïcödé ✓",
] * 4


def tiny_shape(n_kv_head: int, vocab_size: int = 64) -> ModelShape:
    return ModelShape(
        arch="llama", n_layer=2, n_head=4, n_kv_head=n_kv_head, d_model=32, head_dim=8, ffn_hidden=64,
        vocab_size=vocab_size, seq_len=SEQ_LEN, dropout=0.0, rope_theta=10000.0, tie_embeddings=True,
    )


def tiny_model(n_kv_head: int, vocab_size: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(tiny_shape(n_kv_head, vocab_size)).eval()


def save_model_folder(model: torch.nn.Module, folder: Path, tokenizer_json: Path | None = None) -> Path:
    """The `pretrain` artifact layout: config.json, model.safetensors (tied weight once), tokenizer.json."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    save_file(state, folder / "model.safetensors")
    (folder / "config.json").write_text(model.shape.model_dump_json(indent=2))
    if tokenizer_json is not None:
        (folder / "tokenizer.json").write_text(tokenizer_json.read_text())
    return folder


def hand_token_nats(model: torch.nn.Module, tokens: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-target nats and targets, one window at a time, straight from F.cross_entropy."""
    nats, targets = [], []
    with torch.no_grad():
        for start in range(0, len(tokens) - 1, SEQ_LEN):
            window = torch.as_tensor(tokens[start : start + SEQ_LEN + 1], dtype=torch.long)
            logits = model(window[None, :-1])[0]  # (T, V)
            nats.append(F.cross_entropy(logits, window[1:], reduction="none"))
            targets.append(window[1:])
    return torch.cat(nats).double(), torch.cat(targets)


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 64, size=5 * SEQ_LEN + 7).astype(np.uint16)  # last window partial


# ---- perplexity and bits per byte ------------------------------------------------------------------------------


def test_windows_score_every_token_after_the_first_once():
    spans = windows(np.zeros(2 * SEQ_LEN + 4), SEQ_LEN)
    assert spans == [(0, SEQ_LEN + 1), (SEQ_LEN, 2 * SEQ_LEN + 1), (2 * SEQ_LEN, 2 * SEQ_LEN + 4)]
    assert sum(stop - start - 1 for start, stop in spans) == 2 * SEQ_LEN + 3
    assert windows(np.zeros(1), SEQ_LEN) == [] and windows(np.zeros(0), SEQ_LEN) == []


@pytest.mark.parametrize("n_kv_head", [4, 2], ids=["mha", "gqa"])
def test_stream_loss_equals_cross_entropy_by_hand(stream, n_kv_head):
    model = tiny_model(n_kv_head)
    score = score_stream(model, stream, SEQ_LEN, batch_size=2, byte_lengths=np.ones(64, dtype=np.int64))
    nats, _ = hand_token_nats(model, stream)
    assert score.tokens == len(stream) - 1 == len(nats)
    assert score.nats == pytest.approx(nats.sum().item(), rel=1e-6)
    assert score.perplexity == pytest.approx(math.exp(nats.mean().item()), rel=1e-6)


def test_scores_do_not_depend_on_batch_size(stream):
    model = tiny_model(2)
    bytes_per_id = np.arange(64) % 3
    scores = [score_stream(model, stream, SEQ_LEN, size, bytes_per_id) for size in (1, 2, 3, 64)]
    for score in scores[1:]:
        assert score.tokens == scores[0].tokens and score.bytes == scores[0].bytes
        assert score.nats == pytest.approx(scores[0].nats, rel=1e-6)
        assert score.byte_nats == pytest.approx(scores[0].byte_nats, rel=1e-6)


def test_bits_per_byte_counts_only_tokens_that_stand_for_bytes(stream):
    model = tiny_model(4)
    bytes_per_id = np.arange(64) % 4  # ids 0, 4, 8, ... play special tokens: no bytes, and their loss is left out
    score = score_stream(model, stream, SEQ_LEN, 4, bytes_per_id)
    nats, targets = hand_token_nats(model, stream)
    target_bytes = torch.as_tensor(bytes_per_id)[targets]
    assert score.bytes == int(target_bytes.sum())
    expected = nats[target_bytes > 0].sum().item() / math.log(2) / target_bytes.sum().item()
    assert score.bits_per_byte == pytest.approx(expected, rel=1e-6)


def test_unigram_baseline_on_a_known_distribution():
    # Counts 3, 1, 0, 0 plus one each: probabilities 4/8, 2/8, 1/8, 1/8.
    train = np.array([0, 0, 0, 1], dtype=np.uint16)
    assert unigram_baseline(train, np.array([0, 1]), vocab_size=4) == pytest.approx(1.5 * math.log(2))
    assert unigram_baseline(train, np.array([3]), vocab_size=4) == pytest.approx(3 * math.log(2))
    assert unigram_baseline(np.zeros(0, np.uint16), np.array([2]), vocab_size=4) == pytest.approx(math.log(4))


# ---- sampling --------------------------------------------------------------------------------------------------


def engine_of(model, eot_id=None, vocab_size=None):
    """The suites' decoding engine over a bare model (no tokenizer: token ids only)."""
    from types import SimpleNamespace

    return suite_engine(SimpleNamespace(model=model, tokenizer=None, eot_id=eot_id,
                                        vocab_size=vocab_size or model.shape.vocab_size))


def test_suite_decoding_is_cached_deterministic_and_keeps_the_end_of_a_long_prompt():
    model = tiny_model(2)
    engine = engine_of(model)
    prompt = list(range(30))  # longer than the context of 16
    runs = [complete(engine, prompt, SamplingParams(max_tokens=6, temperature=0.0, seed=seed)).token_ids
            for seed in (1, 2)]
    assert runs[0] == runs[1] and len(runs[0]) == 6
    with torch.no_grad():  # the prompt kept its last 16 - 6 tokens, leaving room for the answer
        assert runs[0][0] == int(model(torch.tensor([prompt[-10:]]))[0, -1].argmax())
    top_1 = complete(engine, prompt, SamplingParams(max_tokens=6, temperature=1.0, top_k=1, seed=3)).token_ids
    assert top_1 == runs[0]


def test_suite_decoding_stops_at_eot_and_stays_in_the_vocabulary():
    model = tiny_model(4)
    greedy = complete(engine_of(model), [1, 2, 3], SamplingParams(max_tokens=5, temperature=0.0)).token_ids
    stopped = complete(engine_of(model, eot_id=greedy[0]), [1, 2, 3], SamplingParams(max_tokens=5, temperature=0.0))
    assert stopped.token_ids == greedy[:1] and stopped.finish_reason == "stop"
    drawn = complete(engine_of(model, vocab_size=10), [1, 2, 3], SamplingParams(max_tokens=12, temperature=2.0, seed=0))
    assert len(drawn.token_ids) == 12 and max(drawn.token_ids) < 10
    again = complete(engine_of(model, vocab_size=10), [1, 2, 3], SamplingParams(max_tokens=12, temperature=2.0, seed=0))
    assert drawn.token_ids == again.token_ids


# ---- ONNX ------------------------------------------------------------------------------------------------------


def test_onnx_export_matches_torch_across_batches_and_lengths(tmp_path):
    import onnx
    import onnxruntime

    model = tiny_model(4)
    written = export_onnx(model, tmp_path / "model.onnx", opset=18)
    assert written == [tmp_path / "model.onnx"]  # small model: one self-contained file
    graph = onnx.load(tmp_path / "model.onnx").graph
    dims = [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim]
    assert (graph.input[0].name, dims, graph.output[0].name) == ("input_ids", ["batch", "seq"], "logits")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        for length in (3, SEQ_LEN):
            ids = torch.randint(0, 64, (batch, length), generator=torch.Generator().manual_seed(batch * length))
            with torch.no_grad():
                expected = model(ids).numpy()
            (actual,) = session.run(["logits"], {"input_ids": ids.numpy()})
            assert actual.shape == (batch, length, 64)
            assert np.abs(actual - expected).max() < 1e-4


# ---- executors end to end --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    """Tokenizer, tokens (val has documents, test is empty) and model folders as the upstream steps write them."""
    root = tmp_path_factory.mktemp("artifacts")
    tokenizer = train_bpe(DOCUMENTS, vocab_size=300, min_frequency=2, eot_token=EOT)
    eot_id = tokenizer.token_to_id(EOT)
    vocab_size = tokenizer.get_vocab_size()
    tokenizer_dir = root / "tokenizer"
    tokenizer_dir.mkdir()
    tokenizer.save(str(tokenizer_dir / "tokenizer.json"))
    (tokenizer_dir / "meta.json").write_text(json.dumps({"type": "bpe", "vocab_size": vocab_size, "eot_id": eot_id}))

    encoded = [ids + [eot_id] for ids in (e.ids for e in tokenizer.encode_batch(DOCUMENTS))]
    split_docs = {"train": encoded[:16], "val": encoded[16:], "test": []}
    tokens_dir = root / "tokens"
    tokens_dir.mkdir()
    splits = {}
    for name, docs in split_docs.items():
        flat = np.array([t for doc in docs for t in doc], dtype="<u2")
        (tokens_dir / f"{name}.bin").write_bytes(flat.tobytes())
        splits[name] = {"documents": len(docs), "tokens": len(flat), "bytes": 0}
    meta = {"dtype": "uint16", "eot_id": eot_id, "vocab_size": vocab_size, "splits": splits}
    (tokens_dir / "meta.json").write_text(json.dumps(meta))

    model_dir = save_model_folder(tiny_model(2, vocab_size=320), root / "model", tokenizer_dir / "tokenizer.json")
    return {"tokenizer": tokenizer_dir, "tokens": tokens_dir, "model": model_dir}


def step_context(inputs: dict[str, Path], out_dir: Path) -> StepContext:
    out_dir.mkdir(parents=True)
    return StepContext(
        name="under_test", inputs=inputs, out_dir=out_dir, scratch_dir=out_dir.parent / "scratch",
        device="cpu", reporter=LineReporter(),
    )


def evaluate_spec(**changes) -> dict:
    """A resolved spec as the compiler writes it, from the list form `suites = ["perplexity", "samples"]`."""
    from llmrecipe.recipe.evaluate import EvaluateStep

    step = EvaluateStep.model_validate(
        {"kind": "evaluate", "model": "m", "batch_size": 3, "samples": {"count": 2, "prompt_tokens": 4,
         "max_new_tokens": 8, "temperature": 0.8, "top_k": 10}, "bootstrap": 200, **changes}
    )
    suites = {name: suite.model_dump(mode="json") for name, suite in step.named_suites().items()}
    return {"suites": suites, "batch_size": 3, "worst": 2, "bootstrap": 200, "device": "cpu", "seed": 7}


EVALUATE_SPEC = evaluate_spec()


def test_model_folder_round_trips(artifacts):
    model, shape = load_trained(artifacts["model"])
    assert shape == tiny_shape(2, 320)
    assert torch.equal(model.lm_head.weight, tiny_model(2, 320).embed.weight)


@pytest.mark.e2e
def test_evaluate_step_end_to_end(artifacts, tmp_path):
    from llmrecipe.steps import evaluate

    metrics = evaluate.run(EVALUATE_SPEC, step_context(artifacts, tmp_path / "a"))
    val_tokens = json.loads((artifacts["tokens"] / "meta.json").read_text())["splits"]["val"]["tokens"]
    assert metrics["val_tokens"] == val_tokens - 1 and metrics["test_tokens"] == 0
    assert metrics["val_ppl"] == pytest.approx(math.exp(metrics["val_loss"]))
    assert 0 < metrics["val_bpb"] and 0 < metrics["val_unigram_loss"] < math.log(300)
    assert metrics["val_loss"] == pytest.approx(math.log(320), rel=0.05)  # a random model is near uniform
    assert "test_loss" not in metrics and metrics["samples_count"] == 2
    low, high = json.loads((tmp_path / "a" / "results.json").read_text())["suites"]["val"]["intervals"]["loss"]
    assert low < metrics["val_loss"] < high

    results = json.loads((tmp_path / "a" / "results.json").read_text())["suites"]
    assert results["test"]["metrics"] == {} and results["test"]["extra"] == {"tokens": 0} and results["test"]["note"]
    samples = [json.loads(line) for line in (tmp_path / "a" / "examples" / "samples.jsonl").read_text().splitlines()]
    assert all(any(doc.startswith(s["prompt"]) for doc in DOCUMENTS) for s in samples)  # document starts
    markdown = (tmp_path / "a" / "samples.md").read_text(encoding="utf-8")
    assert all(s["prompt"] in markdown and s["continuation"] in markdown for s in samples)

    again = evaluate.run(EVALUATE_SPEC, step_context(artifacts, tmp_path / "b"))
    assert again == metrics
    assert (tmp_path / "b" / "results.json").read_text() == (tmp_path / "a" / "results.json").read_text()


def test_evaluate_step_caps_tokens_and_runs_suites_alone(artifacts, tmp_path):
    from llmrecipe.steps import evaluate

    spec = evaluate_spec(suites=["perplexity"], splits=["val"], max_tokens=20)
    metrics = evaluate.run(spec, step_context(artifacts, tmp_path / "capped"))
    assert metrics["val_tokens"] == 20 and "samples_count" not in metrics
    assert not (tmp_path / "capped" / "samples.md").exists()

    no_val = dict(artifacts, tokens=tmp_path / "tokens")  # no held-out tokens to prompt with
    no_val["tokens"].mkdir()
    (no_val["tokens"] / "meta.json").write_text((artifacts["tokens"] / "meta.json").read_text())
    for split in ("train", "val", "test"):
        (no_val["tokens"] / f"{split}.bin").write_bytes(b"")
    metrics = evaluate.run(evaluate_spec(suites=["samples"]), step_context(no_val, tmp_path / "no_prompts"))
    assert metrics == {"samples_count": 0}


@pytest.mark.e2e
def test_export_step_end_to_end(artifacts, tmp_path):
    from llmrecipe.steps import export

    out = tmp_path / "onnx"
    ctx = step_context({"model": artifacts["model"]}, out)
    metrics = export.run({"format": "onnx", "opset": 18, "tolerance": 1e-4}, ctx)
    assert metrics["max_abs_diff"] < 1e-4 and metrics["opset"] == 18
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.onnx", "tokenizer.json"]
    assert metrics["onnx_bytes"] == (out / "model.onnx").stat().st_size


def test_export_step_fails_beyond_tolerance(artifacts, tmp_path, monkeypatch):
    from llmrecipe.steps import export

    monkeypatch.setattr(export, "export_onnx", lambda model, path, opset: [path])
    monkeypatch.setattr(export, "max_logit_difference", lambda model, path: 0.5)
    ctx = step_context({"model": artifacts["model"]}, tmp_path / "o")
    with pytest.raises(StepError, match="differ from torch's by up to 0.5"):
        export.run({"format": "onnx", "opset": 18, "tolerance": 1e-4}, ctx)
