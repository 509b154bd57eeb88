"""Stable bytes: every hash the data step stores a decision by is XXH64 of UTF-8 bytes, pinned here by value, so
a polars (or polars-hash) upgrade that changed them would fail this test instead of silently moving documents
between kept and dropped, or train and val."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from llmrecipe.data.dedup import content_key
from llmrecipe.data.hashing import xxh64
from llmrecipe.data.minhash import band_keys, signatures
from llmrecipe.data.words import lowercase_word_hashes
from llmrecipe.steps import EXECUTORS
from tests.data_helpers import assert_same_outputs, decisions_digest, outputs_of, planted_corpus, run_step, spec_for

TEXTS = pl.Series(["", "a", "The quick brown fox jumps over the lazy dog", "naïve café 日本語"])


def test_xxh64_known_values():
    # XXH64 of the empty string under seed 0 is the specification's own test vector (0xEF46DB3751D8E999)
    assert xxh64(TEXTS).tolist() == [17241709254077376921, 15154266338359012955, 802816344064684476,
                                     15332663802293115838]
    assert xxh64(TEXTS, seed=11).tolist() == [6909044625135789424, 8914427832487864488, 16445948234464055836,
                                              6369702030291084402]
    assert xxh64(TEXTS, seed=-1).tolist() == xxh64(TEXTS, seed=2**64 - 1).tolist()


def test_xxh64_matches_the_reference_implementation():
    xxhash = pytest.importorskip("xxhash", reason="the reference XXH64 comes with the test extra")
    texts = ["", "x" * 31, "y" * 32, "z" * 1000, "ünïcödé ✓", "\x00a"]
    for seed in (0, 7, 2**63 + 5):
        assert xxh64(pl.Series(texts), seed).tolist() == [xxhash.xxh64_intdigest(t.encode(), seed) for t in texts]


def test_dedup_and_minhash_keys_are_pinned():
    assert content_key(TEXTS, True)[2].tolist() == [7344851867180917520, 4559769593296471030]
    signature = signatures(TEXTS, 5, 8)
    assert signature[2].tolist() == [879291312, 1821909904, 3960587728, 3611122518, 3981342657, 1618298256,
                                     2469701481, 251775301]
    assert band_keys(signature, 2)[2].tolist() == [3022128690737181491, 17144988324944843557]
    assert lowercase_word_hashes(TEXTS[2:3])[1][:3].tolist() == [5458203841312567825, 8111062836231489971,
                                                                 8538866675318974110]


def test_step_decisions_are_pinned(tmp_path):
    """What the standard ops keep, drop (and for which duplicate) and where they split, by content."""
    files = planted_corpus(tmp_path / "src")
    out = run_step(tmp_path / "run", files, spec_for(tmp_path / "src"))
    # moved when dropped.parquet began listing stage by stage, whatever the batch size (data executor 6)
    assert decisions_digest(out) == "d2da0b460194cbf4b6e592b7de2be97c2e02f942b7d67ff1804a042ae29350f1"


def test_the_batch_size_changes_no_output(tmp_path):
    """`batch_mb` is an execution choice left out of the fingerprint: shards of another size give the same
    splits, stats and dropped rows (dropped.parquet lists stage by stage, not in the shards' interleaving)."""
    files = planted_corpus(tmp_path / "src")
    small = outputs_of(run_step(tmp_path / "one", files, spec_for(tmp_path / "src", batch_mb=1)))
    large = outputs_of(run_step(tmp_path / "two", files, spec_for(tmp_path / "src", batch_mb=2)))
    assert small["dropped"]["stage"].n_unique() >= 3
    assert_same_outputs(small, large)


def test_no_unstable_hash_in_the_data_step():
    """polars' `hash()` may change between versions: nothing in llmrecipe/data may call it."""
    folder = Path(__file__).resolve().parent.parent / "llmrecipe" / "data"
    callers = [path.name for path in folder.glob("*.py") if re.search(r"\.hash\(", path.read_text())]
    assert callers == []


def test_data_executor_version_moved_with_the_hash():
    assert EXECUTORS["data"].version >= 4
