"""The data step's fast paths give what the plain versions give: word splitting, the stop-word table, cheap
line counts and whitespace cleanup, row reads in spans, dedups deciding among survivors in one pass, and
polars' thread pool in worker processes."""

from __future__ import annotations

import json
import os
import random
import re

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrecipe.data.clean import clean_whitespace, spaced
from llmrecipe.data.corpusjobs import InProcessDedup
from llmrecipe.data.dedup import read_rows
from llmrecipe.data.quality import BULLET_START, BULLETS, NONEMPTY_LINES, line_counts
from llmrecipe.data.workers import ALLOCATOR, THREADS_VARIABLE, Workers
from llmrecipe.data.words import WordSet, hash_words, split_words
from llmrecipe.recipe.data import DedupExact, DedupNear, Normalize, Source
from llmrecipe.steps.data import run
from tests.test_data_step import context, data_spec, external, write_files

TEXTS = st.lists(st.text(alphabet=st.sampled_from("ab- *•.…\t\r\n\u00a0\u2003é"), max_size=25), min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(texts=TEXTS)
def test_split_words_splits_on_ascii_whitespace_and_no_break_space(texts):
    words, doc = split_words(pl.Series(texts, dtype=pl.String))
    expected = [(k, w) for k, text in enumerate(texts) for w in re.split(r"[ \t\n\r\f\v\u00a0]+", text) if w]
    assert list(zip(doc.tolist(), words.to_list())) == expected


def test_word_set_finds_its_members_and_nothing_else():
    members = ["the", "The", "THE", "of", "with"]
    found = WordSet(members).lookup(hash_words(pl.Series(["of", "cat", "THE", "", "with", "the"])))
    assert found.tolist() == [3, -1, 2, -1, 4, 0]


@settings(max_examples=80, deadline=None)
@given(texts=TEXTS)
def test_line_counts_equal_the_multiline_regex(texts):
    text = pl.Series(texts, dtype=pl.String)
    assert line_counts(text, NONEMPTY_LINES, r"\S").to_list() == text.str.count_matches(NONEMPTY_LINES).to_list()
    assert line_counts(text, BULLETS, BULLET_START).to_list() == text.str.count_matches(BULLETS).to_list()


@settings(max_examples=80, deadline=None)
@given(texts=TEXTS)
def test_whitespace_cleanup_equals_the_full_cleanup(texts):
    text = pl.Series(texts, dtype=pl.String)
    assert spaced(text, Normalize()).to_list() == pl.select(clean_whitespace(pl.lit(text))).to_series().to_list()


def test_rows_read_in_spans_equal_rows_read_one_by_one(tmp_path):
    table = np.random.default_rng(0).integers(0, 1 << 32, (20_000, 7), dtype=np.uint32)
    path = tmp_path / "rows.u32"
    table.tofile(path)
    rows = np.unique(np.concatenate([np.arange(5), [70, 4095, 4096, 4097, 9_000, 19_999],
                                     np.random.default_rng(1).integers(0, 20_000, 500)]))
    with open(path, "rb") as file:
        assert np.array_equal(read_rows(file.fileno(), rows, 7), table[rows])
        assert read_rows(file.fileno(), rows[:0], 7).shape == (0, 7)


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.lists(st.sampled_from(["the", "cat", "sat", "on", "mat", "dog", "The"]), min_size=1, max_size=12)
                      .map(" ".join), min_size=1, max_size=14), seed=st.integers(0, 1000), near=st.booleans())
def test_deciding_among_survivors_equals_deciding_on_them_alone(tmp_path_factory, texts, seed, near):
    """A pass observes every document; an op then deciding among an earlier op's survivors must keep what it
    would keep had it seen only those."""
    op = DedupNear(shingle_size=2, num_perm=32, bands=16, threshold=0.6) if near else DedupExact()
    among = np.random.default_rng(seed).random(len(texts)) < 0.6
    rows = np.flatnonzero(among)
    everything = InProcessDedup(op, tmp_path_factory.mktemp("all"))
    everything.observe(pl.Series(texts, dtype=pl.String))
    widened = everything.decide(among)
    alone = InProcessDedup(op, tmp_path_factory.mktemp("alone"))
    if len(rows):
        alone.observe(pl.Series([texts[k] for k in rows], dtype=pl.String))
    decided = alone.decide()
    assert widened.keep[~among].all()
    assert widened.keep[rows].tolist() == decided.keep.tolist()
    expected = np.where(decided.duplicate_of >= 0, rows[np.maximum(decided.duplicate_of, 0)], -1)
    assert widened.duplicate_of[rows].tolist() == expected.tolist()
    assert (widened.duplicate_of[~among] == -1).all()


def test_consecutive_dedups_in_one_pass_keep_what_separate_passes_keep(tmp_path):
    """dedup_exact then dedup_near share a pass; with a no-op between them they run in two: same splits, and
    each dedup drops the same documents. The split profiles count the words near-dedup saved unless an op
    follows it: the mismatch report is the same either way."""
    rng = random.Random(3)
    words = [f"w{k}" for k in range(300)] + ["the", "and", "of", "to", "The", "AND"]
    docs = [" ".join(rng.choices(words, k=50)) for _ in range(600)]
    docs += docs[:80] + [d.replace(d.split()[10], "changed", 1) for d in docs[100:200]]
    write_files(tmp_path / "src", {"a.jsonl": "".join(json.dumps({"text": d}) + "\n" for d in docs)})
    near, no_op = {"op": "dedup_near", "threshold": 0.7}, {"op": "filter_length", "min_chars": 0}
    results = []
    for name, ops in (("fused", [{"op": "dedup_exact"}, near]), ("apart", [{"op": "dedup_exact"}, no_op, near]),
                      ("words split again", [{"op": "dedup_exact"}, near, no_op])):
        root = tmp_path / name
        root.mkdir()
        ctx = context(root, external(tmp_path / "src", ["a.jsonl"]))
        run({**data_spec([Source(path=str(tmp_path / "src"))], ops, val=0.1, test=0.1), "batch_mb": 1}, ctx)
        dropped = pl.read_parquet(ctx.out_dir / "dropped.parquet").with_columns(pl.col("stage").str.extract(r"(dedup_\w+)"))
        results.append(({s: pl.read_parquet(ctx.out_dir / f"{s}.parquet") for s in ("train", "val", "test")},
                        dropped.sort("stage", "id"), json.loads((ctx.out_dir / "stats.json").read_text())["mismatch"]))
    fused_splits, fused_dropped, fused_mismatch = results[0]
    assert fused_dropped.height >= 150 and fused_mismatch["val"]["docs"] > 0
    for splits, dropped, mismatch in results[1:]:
        for name in ("train", "val", "test"):
            assert fused_splits[name].equals(splits[name])
        assert fused_dropped.equals(dropped)
        assert fused_mismatch == mismatch


def test_workers_run_polars_on_their_share_of_the_cores_and_leave_the_environment_as_it_was(monkeypatch):
    monkeypatch.delenv(THREADS_VARIABLE, raising=False)
    for name in ALLOCATOR:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "12345")  # the user's own setting wins, and stays
    monkeypatch.setenv("_RJEM_MALLOC_CONF", "dirty_decay_ms:500,muzzy_decay_ms:1000,narenas:2")  # as polars leaves it
    workers = Workers(2)
    workers.start()
    try:
        sizes = [workers._pool.submit(pl.thread_pool_size).result() for _ in range(2)]
        seen = dict(zip(ALLOCATOR, [workers._pool.submit(os.getenv, name).result() for name in ALLOCATOR]))
    finally:
        workers.close()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert sizes == [max(1, cores // 2)] * 2
    # polars' defaults, then ours, then the user's: later settings win
    assert seen["_RJEM_MALLOC_CONF"] == ("dirty_decay_ms:500,muzzy_decay_ms:1000,"
                                         "dirty_decay_ms:10000,muzzy_decay_ms:10000,narenas:2")
    assert seen["MALLOC_MMAP_THRESHOLD_"] == ALLOCATOR["MALLOC_MMAP_THRESHOLD_"]
    assert seen["MALLOC_TRIM_THRESHOLD_"] == "12345"
    assert THREADS_VARIABLE not in os.environ
    assert os.environ["_RJEM_MALLOC_CONF"] == "dirty_decay_ms:500,muzzy_decay_ms:1000,narenas:2"
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "12345"
