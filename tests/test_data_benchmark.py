"""benchmarks/data_pipeline.py: its `bench` extra installs what it imports, and its dedup quality measure counts
right and wrong removals as it says."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import data_pipeline  # noqa: E402


def test_the_bench_extra_lists_what_datatrove_needs():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["bench"]
    names = {requirement.split("=")[0].split("<")[0].split(">")[0] for requirement in extra}
    assert {"datatrove", "orjson", "xxhash"} <= names


def test_datatrove_reads_jsonl_with_the_bench_extra(tmp_path):
    pytest.importorskip("datatrove", reason="the bench extra: pip install -e '.[bench]'")
    from datatrove.pipeline.readers import JsonlReader

    (tmp_path / "a.jsonl").write_text('{"id": "g1-0", "text": "hello"}\n')
    assert [doc.id for doc in JsonlReader(str(tmp_path))()] == ["g1-0"]


def test_group_quality_counts_every_copy_but_one():
    reached = pl.Series(["0:g1-0", "0:g1-e1", "0:g1-n2", "0:g2-0", "0:g3-0", "0:g3-n1"])
    # g1 keeps one of three (2 right removals), g2 (alone) is removed (wrong), g3 keeps both (1 missed)
    kept = pl.Series(["0:g1-n2", "0:g3-0", "0:g3-n1"])
    precision, recall = data_pipeline.group_quality(reached, kept)
    assert (precision, recall) == (2 / 3, 2 / 3)
