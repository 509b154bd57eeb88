"""A small corpus with planted exact and near duplicates, the data step run on it, and its outputs compared
by content: shared by the hashing, resume and Ray engine tests."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import polars as pl

from llmrecipe.digests import sha256_file
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.run.context import StepContext
from llmrecipe.run.reporter import LineReporter
from llmrecipe.steps.data import run

STANDARD_OPS = [{"op": "normalize"}, {"op": "quality", "off": ["min_stop_words"]}, {"op": "pii"},
                {"op": "dedup_exact"}, {"op": "dedup_near", "threshold": 0.7}, {"op": "filter_length", "min_chars": 30}]
OUTPUTS = ("train", "val", "test", "dropped")


def planted_corpus(folder: Path, docs: int = 3_000, files: int = 3) -> list[ExternalFile]:
    """JSONL files of random-word documents plus exact copies, near copies (one word changed) and a few
    with personal data, spread over `files` files."""
    words = [f"word{k}" for k in range(400)] + ["the", "and", "of", "to", "with", "that"]
    rng = random.Random(0)
    texts = [" ".join(rng.choices(words, k=60 + k % 40)) + "." for k in range(docs)]
    texts += texts[: docs // 15] + [near_copy(t) for t in texts[docs // 15 : docs // 7]]
    texts += ["mail me at a@b.org please"] * 3
    rng.shuffle(texts)
    folder.mkdir(parents=True, exist_ok=True)
    found = []
    for index in range(files):
        path = folder / f"part-{index}.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[index::files]))
        found.append(ExternalFile(source=0, name=path.name, sha256=sha256_file(path), size=path.stat().st_size,
                                  path=str(path)))
    return found


def near_copy(text: str) -> str:
    """The text with its tenth word replaced: a 5-shingle Jaccard similarity near 0.9."""
    words = text.split(" ")
    return " ".join(words[:9] + ["altered"] + words[10:])


def spec_for(folder: Path, **settings) -> dict:
    return {"sources": [{"path": str(folder), "glob": "*.jsonl"}], "ops": STANDARD_OPS,
            "split": {"val": 0.1, "test": 0.1}, "on_bad_record": "skip", "batch_mb": 1, "workers": 1,
            "mix_seed": None, **settings}


def run_step(root: Path, files: list[ExternalFile], spec: dict) -> Path:
    """The data step run on `files` with its out and scratch folders under `root`; returns the out folder."""
    out = root / "out"
    out.mkdir(parents=True)
    ctx = StepContext(name="corpus", inputs={}, out_dir=out, scratch_dir=root / "scratch", device="cpu",
                      reporter=LineReporter(), external=files)
    run(spec, ctx)
    return out


def outputs_of(out: Path) -> dict:
    """The step's outputs as data: each Parquet file's rows, and stats.json."""
    found = {name: pl.read_parquet(out / f"{name}.parquet") for name in OUTPUTS}
    found["stats"] = json.loads((out / "stats.json").read_text())
    return found


def assert_same_outputs(one: dict, two: dict) -> None:
    assert one["stats"] == two["stats"]
    for name in OUTPUTS:
        assert one[name].equals(two[name]), name


def decisions_digest(out: Path) -> str:
    """sha256 of what the step decided, by content (independent of the Parquet writer's bytes): each split's
    ids in order, every dropped row, and the split-mismatch report."""
    found = outputs_of(out)
    parts = {name: found[name].select("id").to_dicts() for name in ("train", "val", "test")}
    parts["dropped"] = found["dropped"].to_dicts()
    parts["mismatch"] = found["stats"]["mismatch"]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
