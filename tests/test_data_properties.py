"""Properties of the data ops (hypothesis): normalize is idempotent, dedup is idempotent and keeps the same
texts whatever the order, splits are disjoint, complete and stable, and the accounting always reconciles."""

from __future__ import annotations

import json
from pathlib import Path
import tempfile

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrecipe.data.corpusjobs import InProcessDedup
from llmrecipe.digests import sha256_file
from llmrecipe.data.ops import OPS
from llmrecipe.data.split import assign_splits
from llmrecipe.errors import StepError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import DedupExact, DedupNear, Normalize, Split
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps.data import run

WORDS = st.sampled_from(["the", "cat", "sat", "on", "mat", "dog", "ran", "far", "The", "  ", "\n", "Ã©", "\x07"])
DOCUMENTS = st.lists(st.lists(WORDS, max_size=25).map(" ".join), max_size=12)


def frame_of(texts: list[str], source: list[int] | None = None) -> pl.DataFrame:
    return pl.DataFrame({"id": [f"0:d#{k}" for k in range(len(texts))], "text": texts,
                         "source": source or [0] * len(texts)},
                        schema={"id": pl.String, "text": pl.String, "source": pl.Int32})


@settings(max_examples=80, deadline=None)
@given(texts=st.lists(st.text(alphabet=st.sampled_from("aZ \t\r\n\x00\x07\u00a0\u0301\ufb01\u2028éİÃ©ℌ"), max_size=30), max_size=5),
       form=st.sampled_from(["NFC", "NFKC", "none"]), lowercase=st.booleans(), fix_encoding=st.booleans())
def test_normalize_is_idempotent_with_every_option(texts, form, lowercase, fix_encoding):
    op = Normalize(form=form, lowercase=lowercase, fix_encoding=fix_encoding)
    once = OPS["normalize"](frame_of(texts), op).frame
    assert OPS["normalize"](once, op).frame["text"].to_list() == once["text"].to_list()


def kept_texts(op, texts: list[str]) -> list[str]:
    with tempfile.TemporaryDirectory() as work:
        dedup = InProcessDedup(op, Path(work))
        if texts:
            dedup.observe(pl.Series(texts, dtype=pl.String))
        keep = dedup.decide().keep
    return [text for text, k in zip(texts, keep) if k]


@settings(max_examples=60, deadline=None)
@given(texts=DOCUMENTS, seed=st.integers(0, 1000), near=st.booleans())
def test_dedup_is_idempotent_and_order_independent(texts, seed, near):
    """Exact dedup keeps the same texts in any order; near dedup the same number (the earliest of each cluster)."""
    op = DedupNear(shingle_size=2, num_perm=32, bands=16, threshold=0.6) if near else DedupExact()
    kept = kept_texts(op, texts)
    assert kept_texts(op, kept) == kept
    shuffled = [texts[k] for k in np.random.default_rng(seed).permutation(len(texts))]
    if near:  # the clusters do not depend on the order, and each keeps its earliest document, so only the count does not
        assert len(kept_texts(op, shuffled)) == len(kept)
    else:
        assert sorted(kept_texts(op, shuffled)) == sorted(kept)


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.text(max_size=15), min_size=1, max_size=20), val=st.floats(0, 0.45), test=st.floats(0, 0.45),
       stratify=st.booleans(), seed=st.integers(0, 1000))
def test_splits_are_disjoint_complete_and_stable(texts, val, test, stratify, seed):
    config = Split(val=val, test=test, stratify=stratify)
    sources = [k % 2 for k in range(len(texts))]
    docs = frame_of(texts, sources)
    splits = assign_splits(docs, config)
    ids = [set(frame["id"].to_list()) for frame in splits.values()]
    assert sum(len(s) for s in ids) == len(docs) and set.union(*ids) == set(docs["id"].to_list())
    order = np.random.default_rng(seed).permutation(len(texts))
    shuffled = assign_splits(docs[order.tolist()], config)
    for name in splits:
        assert sorted(shuffled[name]["id"].to_list()) == sorted(splits[name]["id"].to_list())


OPS_LISTS = st.lists(st.sampled_from([
    {"op": "normalize", "lowercase": True},
    {"op": "filter_length", "min_chars": 8},
    {"op": "filter_length", "max_words": 6},
    {"op": "regex_filter", "pattern": "dog"},
    {"op": "quality", "min_words": 3, "min_stop_words": 1},
    {"op": "pii", "action": "drop"},
    {"op": "dedup_exact"},
    {"op": "dedup_near", "shingle_size": 2, "num_perm": 16, "bands": 8, "threshold": 0.5},
]), max_size=5)


@settings(max_examples=25, deadline=None)
@given(texts=st.lists(st.lists(WORDS, min_size=1, max_size=12).map(" ".join), min_size=1, max_size=30), ops=OPS_LISTS)
def test_accounting_always_reconciles(texts, ops):
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        files = [ExternalFile(source=0, name="docs.jsonl", sha256=sha256_file(root / "docs.jsonl"), size=1,
                              path=str(root / "docs.jsonl"))]
        (root / "out").mkdir()
        ctx = StepContext(name="c", inputs={}, out_dir=root / "out", scratch_dir=root / "scratch", device="cpu",
                          reporter=LineReporter(), external=files)
        spec = {"sources": [{"path": str(root)}], "ops": ops, "split": {"val": 0.0, "test": 0.0},
                "on_bad_record": "skip", "batch_mb": 1, "workers": 1, "mix_seed": None}
        try:
            run(spec, ctx)
        except StepError as error:  # everything filtered away: the message names the op that did it
            assert "removed the last" in str(error)
            return
        stats = json.loads((root / "out" / "stats.json").read_text())
        totals = stats["totals"]
        assert totals["docs_in"] == len(texts) == totals["kept"] + totals["dropped"]
        for stage in stats["stages"]:
            assert stage["docs_in"] == stage["docs_out"] + sum(stage["dropped"].values())
            assert stage["chars_in"] - sum(stage["dropped_chars"].values()) == stage["chars_out"] or stage["op"] in (
                "normalize", "pii")  # these rewrite text, so characters change without drops
        dropped = pl.read_parquet(root / "out" / "dropped.parquet")
        assert len(dropped) == totals["dropped"]
        assert len(pl.read_parquet(root / "out" / "train.parquet")) == totals["kept"]
