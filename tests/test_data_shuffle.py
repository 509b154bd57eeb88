"""Dedup and mixing without the corpus in one process: partitioned files read back by partition, no dedup stage
job holding the corpus's keys (each holds about its partition's share, the components job only the similar
pairs), a step killed between the dedup stages resumes without running finished stage jobs again, and the mix's
two rounds of counts select what sorting every draw would."""

from __future__ import annotations

import os
import random
from collections import defaultdict

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmrecipe.data.corpusjobs import ComponentsJob, DecideJob, InProcessDedup, StageJob, VerifyJob
from llmrecipe.data.hashing import xxh64
from llmrecipe.data.mixing import CandidateJob, CountJob, cutoffs, deciding_buckets, kept
from llmrecipe.data.shuffle import position, read_partition, row_of, shard_of, write_partitioned
from llmrecipe.recipe.data import DedupExact, DedupNear
from tests.data_helpers import assert_same_outputs, near_copy, outputs_of, planted_corpus, run_step, spec_for


def test_partitioned_files_give_each_partition_its_records_in_file_order(tmp_path):
    rng = np.random.default_rng(0)
    paths, wanted = [], defaultdict(list)
    for producer in range(3):
        records = rng.integers(0, 1 << 63, (50, 3), dtype=np.uint64)
        partition = rng.integers(0, 4, 50)
        paths.append(tmp_path / f"{producer}.part")
        write_partitioned(paths[-1], records, partition, 4)
        for p in range(4):
            wanted[p].append(records[partition == p])
    paths.insert(1, tmp_path / "empty-shard.part")  # never written: read as no records
    for p in range(4):
        assert np.array_equal(read_partition(paths, p, 3), np.concatenate(wanted[p]))
    with pytest.raises(ValueError, match="3-wide"):
        read_partition(paths, 0, 2)


def test_positions_name_shard_and_row_and_sort_in_corpus_order():
    at = np.concatenate([position(0, np.array([5, 70000])), position(3, np.array([0, 2**32 - 1]))])
    assert np.all(np.diff(at.astype(np.float64)) > 0)
    assert shard_of(at).tolist() == [0, 0, 3, 3] and row_of(at).tolist() == [5, 70000, 0, 2**32 - 1]


def recording(monkeypatch) -> dict[str, list[int]]:
    """What each kind of stage job held (records in memory at once), as the jobs run in this process."""
    held: dict[str, list[int]] = defaultdict(list)
    run = StageJob.run

    def run_and_record(job):
        held[type(job).__name__].append(run(job))
        return held[type(job).__name__][-1]

    monkeypatch.setattr(StageJob, "run", run_and_record)
    return held


@pytest.mark.parametrize("op", [DedupExact(), DedupNear(threshold=0.7, bands=14, num_perm=112)], ids=["exact", "near"])
def test_no_stage_job_holds_the_corpus_keys(tmp_path, monkeypatch, op):
    """40 shards, 20 partitions: each decide job holds about a twentieth of the records, a verify job a share of
    the candidate pairs, the components job only the similar pairs (about one per planted copy), not one key per
    document of the corpus."""
    held = recording(monkeypatch)
    rng = random.Random(0)
    words = [f"w{k}" for k in range(5000)]
    texts = [" ".join(rng.choices(words, k=40)) for _ in range(4000)]
    copies = texts[:200] + [near_copy(text) for text in texts[200:400]]
    texts += copies
    rng.shuffle(texts)
    dedup = InProcessDedup(op, tmp_path, partitions=20)
    for start in range(0, len(texts), 105):
        dedup.observe(pl.Series(texts[start : start + 105]))
    decision = dedup.decide()
    records = len(texts) * (op.bands if op.op == "dedup_near" else 1)
    decide = held[DecideJob.__name__]
    assert len(decide) == 20 and sum(decide) == records
    assert max(decide) < 1.5 * records / 20
    if op.op == "dedup_near":
        assert max(held[VerifyJob.__name__]) < len(texts) * 2
        assert held[ComponentsJob.__name__][0] <= 450  # the similar pairs: about the 400 planted copies
        assert (~decision.keep).sum() >= 300  # the 200 exact copies and most near ones (40-word texts, one word changed)
    else:
        assert (~decision.keep).sum() == 200


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shuffle")
    files = planted_corpus(folder / "src", docs=8_000, files=4)
    return folder, files, outputs_of(run_step(folder / "clean", files, spec_for(folder / "src")))


@pytest.mark.parametrize("kill_after, last", [(2, "ops-3/done/decide"), (8, "ops-4/done/scatter"),
                                             (15, "ops-4/done/components")])
def test_a_step_killed_between_dedup_stages_resumes_without_rerunning_them(corpus, tmp_path, monkeypatch, kill_after,
                                                                          last):
    """Killed after the k-th stage job finished (`last`: in exact dedup's decide stage, in near dedup's scatter
    stage, its components job), the next run runs only the stage jobs that had not finished, and writes what an
    uninterrupted run writes."""
    folder, files, clean = corpus
    finished: list[str] = []
    first_run = [True]
    run = StageJob.run

    class Killed(Exception):
        pass

    def run_then_maybe_die(job):
        held = run(job)
        finished.append(str(job.marker()))
        if len(finished) == kill_after and first_run[0]:
            raise Killed
        return held

    monkeypatch.setattr(StageJob, "run", run_then_maybe_die)
    with pytest.raises(Killed):
        run_step(tmp_path / "first", files, spec_for(folder / "src"))
    first = [name.replace(str(tmp_path / "first"), "") for name in finished]
    finished.clear()
    first_run[0] = False
    (tmp_path / "second").mkdir()
    os.rename(tmp_path / "first" / "scratch", tmp_path / "second" / "scratch")
    assert_same_outputs(outputs_of(run_step(tmp_path / "second", files, spec_for(folder / "src"))), clean)
    again = {name.replace(str(tmp_path / "second"), "") for name in finished}
    assert len(first) == kill_after and last in first[-1] and not set(first) & again
    assert any("scatter" in name for name in first + sorted(again))  # near dedup decides among exact's survivors


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(0, 60), min_size=1, max_size=6), sources=st.integers(1, 3), seed=st.integers(0, 99),
       quota_share=st.lists(st.floats(0, 1.2), min_size=3, max_size=3))
def test_the_mix_selection_keeps_what_sorting_every_draw_keeps(tmp_path_factory, sizes, sources, seed, quota_share):
    """Each source keeps its `quota` documents of smallest draw, ties (repeated ids) by corpus position: the two
    rounds over shards and the cutoffs give that, for quotas of none, some, all and more than all."""
    rng = np.random.default_rng(seed)
    folder = tmp_path_factory.mktemp("mix")
    shards = []
    for number, size in enumerate(sizes):
        frame = pl.DataFrame({"id": [f"d{k}" for k in rng.integers(0, 40, size)],
                              "source": rng.integers(0, sources, size).astype(np.int32)},
                             schema={"id": pl.String, "source": pl.Int32})
        frame.write_parquet(folder / f"{number}.parquet")
        shards.append(frame)
    corpus = pl.concat(shards)
    have = np.bincount(corpus["source"].to_numpy(), minlength=sources).astype(np.float64)
    quota = np.floor(have * np.array(quota_share[:sources])).astype(np.int64)
    counts = sum(CountJob([folder / f"{n}.parquet"], 5, sources).run() for n in range(len(sizes)))
    buckets, needed = deciding_buckets(counts, quota)
    found = np.concatenate([np.zeros((0, 3), dtype=np.uint64)] + [
        CandidateJob([folder / f"{n}.parquet"], 5, n, buckets).run() for n in range(len(sizes))])
    cut = cutoffs(found, buckets, needed, quota, have)
    keep = np.concatenate([kept(frame, 5, n, cut) for n, frame in enumerate(shards)])
    draw, source = xxh64(corpus["id"], seed=5), corpus["source"].to_numpy()
    wanted = np.zeros(len(corpus), dtype=bool)
    for index in range(sources):
        rows = np.flatnonzero(source == index)
        if quota[index] > 0:
            wanted[rows[np.argsort(draw[rows], kind="stable")[: quota[index]]]] = True
    assert keep.tolist() == wanted.tolist()
