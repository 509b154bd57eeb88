"""Tokenizers are lossless for any Unicode text, stay within the declared vocabulary, and tokenize writes
the token files downstream steps read. Everything is trained in-process on a tiny corpus."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrecipe.errors import StepError
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps import tokenize as tokenize_step
from llmrecipe.steps import tokenizer as tokenizer_step
from llmrecipe.tokenizer.bytes import load_tokenizer, token_byte_lengths
from llmrecipe.tokenizer.train import train_bpe, train_char

EOT = "<|endoftext|>"
CORPUS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n",
    "All:\nSpeak, speak.\n\n",
    "Ein Bürger sprach: »Schön!« — naïve café, 東京 😀\t",
    "    indented code(x) { return x * 2; }\r\n",
] * 30
VOCAB_SIZE = {"bpe": 320, "char": 290}
TRAINERS = {"bpe": train_bpe, "char": train_char}

# Arbitrary Unicode: every category hypothesis draws from (controls, combining marks, emoji, whitespace,
# private use); surrogates are excluded by default because no UTF-8 string can hold them.
ANY_TEXT = st.text(max_size=200)
MIXED_TEXT = st.lists(st.one_of(ANY_TEXT, st.sampled_from(CORPUS), st.sampled_from([" ", "\n", "\r\n", "\t", "  "])),
                      max_size=6).map("".join)


@pytest.fixture(scope="module", params=["bpe", "char"])
def tokenizer(request):
    kind = request.param
    trained = TRAINERS[kind](iter(CORPUS), vocab_size=VOCAB_SIZE[kind], min_frequency=2, eot_token=EOT)
    return kind, trained


def round_trip(tokenizer, text: str) -> str:
    return tokenizer.decode(tokenizer.encode(text).ids, skip_special_tokens=False)


@settings(max_examples=300, deadline=None)
@given(text=MIXED_TEXT)
def test_decode_inverts_encode_for_any_text(tokenizer, text):
    _, trained = tokenizer
    assert round_trip(trained, text) == text


@pytest.mark.parametrize("text", ["", " ", "  leading and trailing  ", "\n\n\r\n", "a\u0301\u0308", "\x00\x1b[0m",
                                  "👩‍👩‍👧 🇫🇷", "tab\there", "<0x41>", EOT + "after", "\ufeffbom"])
def test_decode_inverts_encode_on_awkward_strings(tokenizer, text):
    _, trained = tokenizer
    assert round_trip(trained, text) == text


def test_eot_is_one_special_id(tokenizer):
    _, trained = tokenizer
    eot_id = trained.token_to_id(EOT)
    assert trained.encode(EOT).ids == [eot_id]
    assert trained.encode("a" + EOT + "b").ids.count(eot_id) == 1
    assert token_byte_lengths(trained)[eot_id] == 0


def test_vocab_stays_within_declared_size(tokenizer):
    kind, trained = tokenizer
    assert trained.get_vocab_size(with_added_tokens=True) <= VOCAB_SIZE[kind]
    assert len(token_byte_lengths(trained)) == trained.get_vocab_size(with_added_tokens=True)


def test_char_tokenizer_gives_known_characters_one_token_each():
    trained = train_char(CORPUS, vocab_size=1000, min_frequency=1, eot_token=EOT)
    text = "Schön 東京\n"
    assert trained.encode(text).tokens == list(text)
    # an unseen character is spelled as its UTF-8 bytes
    assert trained.encode("🦀").tokens == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x80>"]


def test_char_tokenizer_respects_min_frequency_and_limit():
    trained = train_char(["aaab", "ab"], vocab_size=258, min_frequency=1, eot_token=EOT)
    assert trained.get_vocab_size() == 258 and trained.token_to_id("a") == 257 and trained.token_to_id("b") is None
    rare = train_char(["aaab"], vocab_size=1000, min_frequency=2, eot_token=EOT)
    assert rare.token_to_id("a") is not None and rare.token_to_id("b") is None


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_too_small_vocab_is_a_clear_error(kind):
    with pytest.raises(ValueError, match="at least 257"):
        TRAINERS[kind](CORPUS, vocab_size=100, min_frequency=2, eot_token=EOT)


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_training_is_deterministic(kind):
    first = TRAINERS[kind](CORPUS, vocab_size=VOCAB_SIZE[kind], min_frequency=2, eot_token=EOT)
    second = TRAINERS[kind](CORPUS, vocab_size=VOCAB_SIZE[kind], min_frequency=2, eot_token=EOT)
    assert first.to_str() == second.to_str()


@settings(max_examples=200, deadline=None)
@given(text=MIXED_TEXT)
def test_token_byte_lengths_sum_to_utf8_length(tokenizer, text):
    _, trained = tokenizer
    trained_lengths = byte_lengths_of(trained)
    ids = trained.encode(text.replace(EOT, "")).ids
    assert int(trained_lengths[ids].sum()) == len(text.replace(EOT, "").encode("utf-8"))


_LENGTHS: dict[int, np.ndarray] = {}


def byte_lengths_of(trained) -> np.ndarray:
    """Computed once per tokenizer object: hypothesis calls the test hundreds of times."""
    if id(trained) not in _LENGTHS:
        _LENGTHS[id(trained)] = token_byte_lengths(trained)
    return _LENGTHS[id(trained)]


# ---- the executors, end to end on parquet files written here ----

SPLIT_TEXTS = {
    "train": CORPUS[:40] + ["", "contains the literal " + EOT + " string"],
    "val": ["Speak, speak.", "東京 😀"],
    "test": [],
}


def write_data_artifact(folder: Path, splits: dict[str, list[str]]) -> Path:
    folder.mkdir(parents=True)
    for split, texts in splits.items():
        frame = pl.DataFrame(
            {"id": [f"{split}-{i}" for i in range(len(texts))], "text": texts, "source": [0] * len(texts)},
            schema={"id": pl.String, "text": pl.String, "source": pl.Int32},
        )
        frame.write_parquet(folder / f"{split}.parquet")
    return folder


def context(tmp_path: Path, name: str, inputs: dict[str, Path]) -> StepContext:
    out_dir, scratch_dir = tmp_path / name / "out", tmp_path / name / "scratch"
    out_dir.mkdir(parents=True)
    scratch_dir.mkdir(parents=True)
    reporter = LineReporter(out=io.StringIO())
    return StepContext(name=name, inputs=inputs, out_dir=out_dir, scratch_dir=scratch_dir, device="cpu", reporter=reporter)


def tokenizer_spec(kind: str) -> dict:
    return {"type": kind, "vocab_size": VOCAB_SIZE[kind], "min_frequency": 2, "eot_token": EOT}


@pytest.mark.parametrize("kind", ["bpe", "char"])
def test_tokenizer_and_tokenize_steps_end_to_end(tmp_path, kind):
    data = write_data_artifact(tmp_path / "data", SPLIT_TEXTS)
    tok_ctx = context(tmp_path, "tok", {"data": data})
    metrics = tokenizer_step.run(tokenizer_spec(kind), tok_ctx)
    trained, meta = load_tokenizer(tok_ctx.out_dir)
    assert metrics == {"vocab_size": meta["vocab_size"], "type": kind}
    assert meta["vocab_size"] == trained.get_vocab_size() <= VOCAB_SIZE[kind]
    assert meta["eot_id"] == trained.token_to_id(EOT)

    tokens_ctx = context(tmp_path, "tokens", {"data": data, "tokenizer": tok_ctx.out_dir})
    metrics = tokenize_step.run({"dtype": "uint16", "eot_token": EOT}, tokens_ctx)
    written = json.loads((tokens_ctx.out_dir / "meta.json").read_text())
    assert written["dtype"] == "uint16" and written["eot_id"] == meta["eot_id"]
    assert written["vocab_size"] == meta["vocab_size"]
    for split, texts in SPLIT_TEXTS.items():
        ids = np.fromfile(tokens_ctx.out_dir / f"{split}.bin", dtype="<u2")
        assert written["splits"][split] == {
            "documents": len(texts), "tokens": len(ids), "bytes": sum(len(t.encode()) for t in texts),
        }
        assert metrics[f"{split}_tokens"] == len(ids)
        assert_documents_separated_by_eot(ids, texts, trained, meta["eot_id"])
    assert metrics["bytes_per_token"] == pytest.approx(written["splits"]["train"]["bytes"] / metrics["train_tokens"])


def assert_documents_separated_by_eot(ids: np.ndarray, texts: list[str], trained, eot_id: int) -> None:
    """Exactly one eot per document, at its end; the pieces between decode to the texts, in order."""
    assert int((ids == eot_id).sum()) == len(texts)
    ends = np.flatnonzero(ids == eot_id)
    starts = np.concatenate([[0], ends[:-1] + 1]) if len(ends) else ends
    decoded = [trained.decode(ids[s:e].tolist(), skip_special_tokens=False) for s, e in zip(starts, ends)]
    assert decoded == texts


def test_tokenizer_step_fails_on_empty_train_split(tmp_path):
    data = write_data_artifact(tmp_path / "data", {"train": [], "val": ["x"], "test": []})
    with pytest.raises(StepError, match="train split is empty"):
        tokenizer_step.run(tokenizer_spec("bpe"), context(tmp_path, "tok", {"data": data}))


def test_tokenizer_step_reports_too_small_vocab_as_step_error(tmp_path):
    data = write_data_artifact(tmp_path / "data", SPLIT_TEXTS)
    spec = {**tokenizer_spec("char"), "vocab_size": 64}
    with pytest.raises(StepError, match="vocab_size"):
        tokenizer_step.run(spec, context(tmp_path, "tok", {"data": data}))


def test_tokenize_step_rejects_vocab_too_large_for_dtype(tmp_path):
    data = write_data_artifact(tmp_path / "data", SPLIT_TEXTS)
    tok_ctx = context(tmp_path, "tok", {"data": data})
    tokenizer_step.run(tokenizer_spec("bpe"), tok_ctx)
    meta_path = tok_ctx.out_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "vocab_size": 70_000}))
    tokens_ctx = context(tmp_path, "tokens", {"data": data, "tokenizer": tok_ctx.out_dir})
    with pytest.raises(StepError, match="uint16"):
        tokenize_step.run({"dtype": "uint16", "eot_token": EOT}, tokens_ctx)
