"""A large JSONL file read in byte ranges, one job each: the same documents, ids, logs and errors as reading it
whole, wherever the range boundaries fall, and the same step outputs."""

from __future__ import annotations

import gzip
import hashlib
import json
import os

import fsspec
import polars as pl
import pytest

from llmrecipe.data import pipeline
from llmrecipe.data.read import Reader
from llmrecipe.data.readjobs import ReadJob, merged_log, read_jobs
from llmrecipe.errors import StepError
from llmrecipe.plan.plan import ExternalFile
from llmrecipe.recipe.data import Source
from tests.data_helpers import assert_same_outputs, outputs_of, planted_corpus, run_step, spec_for
from tests.test_data_step import external, write_files

MIXED = (b'{"text": "caf\xc3\xa9 \xe2\x82\xac one", "lang": "fr"}\r\n'  # multi-byte UTF-8, CRLF
         b'{"text": "two \xf0\x9f\x98\x80 emoji"}\n'
         b"{broken\n"
         b'\n'
         b'{"text": 7}\n'
         b'{"text": null}\n'
         b'{"text": "latin-1 caf\xe9"}\n'
         + b'{"text": "' + b"long " * 40 + b'"}\n'  # longer than several blocks
         + b"".join(b'{"text": "line %d \xc3\xa9\xc3\xa9"}\n' % k for k in range(12))
         + b'{"text": "no final newline"}')


def read_whole_and_ranged(folder, content: bytes, block_bytes: int, range_bytes: int, policy: str = "skip"):
    write_files(folder, {"big.jsonl": content})
    return same_documents(external(folder, ["big.jsonl"]), folder, block_bytes, range_bytes, policy)


def same_documents(files, folder, block_bytes: int, range_bytes: int, policy: str = "skip"):
    """One reader's documents and log, and the number of range jobs, once the range jobs gave the same documents
    and, merged, the same log."""
    source = Source(path=str(folder))
    whole = Reader(source, 0, policy, ["lang"], block_bytes=block_bytes)
    frame = pl.concat(list(whole.documents(files)))
    jobs = read_jobs([source], [files], range_bytes, folder=folder, policy=policy, metadata=["lang"],
                     downloads=None, block_bytes=block_bytes)
    results = [job.run() for job in jobs]
    ranged = pl.concat([pl.read_parquet(block.path) for result in results for block in result.blocks])
    assert ranged.equals(frame)
    assert json.dumps(merged_log([r.log for r in results]).as_dict()) == json.dumps(whole.log.as_dict())
    return frame, whole.log, len(jobs)


@pytest.mark.parametrize("block_bytes", [7, 16, 23, 31, 48, 64])
@pytest.mark.parametrize("blocks_per_range", [1, 3])
def test_ranges_read_what_the_whole_file_reads_wherever_boundaries_fall(tmp_path, block_bytes, blocks_per_range):
    """Boundaries in the middle of multi-byte characters, of CRLF pairs, right before and right after newlines,
    inside a line longer than a range, before a final line without a newline."""
    frame, log, jobs = read_whole_and_ranged(tmp_path, MIXED, block_bytes, blocks_per_range * block_bytes)
    assert jobs > 3
    assert frame["id"][0] == "0:big.jsonl#0" and frame["id"][-1] == "0:big.jsonl#20" and len(frame) == 17
    assert frame["text"][0] == "café € one" and frame["text"][-1] == "no final newline"
    assert log.bad_records == {"malformed_json": 1, "text_not_string": 1, "missing_text": 1} and log.files == 1
    assert [s["where"] for s in log.bad_samples] == ["3", "5", "6"] and log.repaired["invalid_utf8_bytes"] == 1


def test_boundaries_right_after_and_on_newlines(tmp_path):
    """Lines of 17 bytes: in blocks of 17 every range starts just after a newline; in blocks of 16 some start on
    one (byte 288 ends line 16)."""
    lines = b"".join(b'{"text": "%05d"}\n' % k for k in range(40))
    for block_bytes in (17, 16):
        frame, _, jobs = read_whole_and_ranged(tmp_path, lines, block_bytes, 2 * block_bytes)
        assert jobs == -(-len(lines) // (2 * block_bytes))
        assert frame["id"].to_list() == [f"0:big.jsonl#{k}" for k in range(40)]


def test_a_file_on_an_fsspec_file_system_is_read_in_ranges(tmp_path):
    path = f"memory://ranges-{tmp_path.name}/big.jsonl"
    fsspec.filesystem("memory").pipe(path, MIXED)
    files = [ExternalFile(source=0, name="big.jsonl", sha256=hashlib.sha256(MIXED).hexdigest(), size=len(MIXED),
                          path=path)]
    frame, _, jobs = same_documents(files, tmp_path, 16, 48)
    assert jobs == 14 and len(frame) == 17


def test_a_bad_line_fails_with_the_line_number_the_whole_file_gives(tmp_path):
    content = b"".join(b'{"text": "doc %d"}\n' % k for k in range(30)) + b"{broken\n" + b'{"text": "end"}\n'
    write_files(tmp_path, {"big.jsonl": content})
    files = external(tmp_path, ["big.jsonl"])
    with pytest.raises(StepError) as whole:
        list(Reader(Source(path=str(tmp_path)), 0, "fail", [], block_bytes=32).documents(files))
    jobs = read_jobs([Source(path=str(tmp_path))], [files], 64, folder=tmp_path, policy="fail", metadata=[],
                     downloads=None, block_bytes=32)
    with pytest.raises(StepError) as ranged:
        for job in jobs:
            job.run()
    assert "big.jsonl:31: bad record" in str(whole.value) and str(ranged.value) == str(whole.value)


def test_files_that_stay_whole(tmp_path):
    """Compressed, binary, blank and small files, text, and sources with max_docs are read by one job each."""
    doc = json.dumps({"text": "x" * 50}) + "\n"
    write_files(tmp_path, {"a.jsonl": doc * 20, "b.jsonl": bytes(range(256)) * 4, "c.jsonl": " \n" * 200,
                           "d.jsonl": doc, "e.txt": doc * 20,
                           "f.jsonl.gz": gzip.compress(os.urandom(400))})
    files = external(tmp_path, ["a.jsonl", "b.jsonl", "c.jsonl", "d.jsonl", "e.txt", "f.jsonl.gz"])
    settings = dict(folder=tmp_path, policy="skip", metadata=[], downloads=None, block_bytes=64)
    jobs = read_jobs([Source(path=str(tmp_path))], [files], 128, **settings)
    assert [(job.files[0].name, job.span is not None) for job in jobs if job.files[0].name != "a.jsonl"] == [
        ("b.jsonl", False), ("c.jsonl", False), ("d.jsonl", False), ("e.txt", False), ("f.jsonl.gz", False)]
    assert len([job for job in jobs if job.files[0].name == "a.jsonl"]) == 10  # 1,260 bytes
    assert len(read_jobs([Source(path=str(tmp_path), max_docs=5)], [files], 128, **settings)) == 1


def test_a_file_changed_after_the_plan_is_caught_before_its_ranges_are_read(tmp_path):
    write_files(tmp_path, {"big.jsonl": json.dumps({"text": "x" * 50}) + "\n" * 20})
    files = external(tmp_path, ["big.jsonl"])
    (tmp_path / "big.jsonl").write_text(json.dumps({"text": "y" * 50}) + "\n" * 20)
    with pytest.raises(StepError, match="changed after the plan"):
        read_jobs([Source(path=str(tmp_path))], [files], 16, folder=tmp_path, policy="skip", metadata=[],
                  downloads=None, block_bytes=8)


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    """The planted corpus in one file, and the step's outputs when one job reads it (blocks of 16 KB)."""
    folder = tmp_path_factory.mktemp("ranges")
    files = planted_corpus(folder / "src", docs=3_000, files=1)
    patch = pytest.MonkeyPatch()
    patch.setattr(pipeline, "BLOCK_BYTES", 16 << 10)
    patch.setattr(pipeline, "RANGE_BATCHES", 1_000)
    whole = outputs_of(run_step(folder / "whole", files, spec_for(folder / "src")))
    patch.undo()
    return folder, files, whole


def small_ranges(monkeypatch) -> None:
    """Ranges of 64 KB (about 20 of the corpus's 1.3 MB) cut in blocks of 16 KB."""
    monkeypatch.setattr(pipeline, "BLOCK_BYTES", 16 << 10)
    monkeypatch.setattr(pipeline, "RANGE_BATCHES", 1 / 16)


def test_one_big_file_read_in_ranges_by_two_workers_gives_the_same_outputs(one_file, tmp_path, monkeypatch):
    folder, files, whole = one_file
    small_ranges(monkeypatch)
    ran = []
    monkeypatch.setattr(ReadJob, "saved", lambda job: ran.append(job.span) or None)
    ranged = outputs_of(run_step(tmp_path, files, spec_for(folder / "src", workers=2)))
    assert_same_outputs(ranged, whole)
    assert len(ran) > 10 and all(span is not None for span in ran)


def test_a_step_killed_while_reading_ranges_resumes(one_file, tmp_path, monkeypatch):
    folder, files, whole = one_file
    small_ranges(monkeypatch)
    run, runs = ReadJob.run, []

    def run_then_die(job):
        if len(runs) == 5:
            raise KeyboardInterrupt
        runs.append(job.number)
        return run(job)

    monkeypatch.setattr(ReadJob, "run", run_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_step(tmp_path / "first", files, spec_for(folder / "src"))
    monkeypatch.setattr(ReadJob, "run", lambda job: runs.append(job.number) or run(job))
    (tmp_path / "second").mkdir()
    os.rename(tmp_path / "first" / "scratch", tmp_path / "second" / "scratch")
    resumed = outputs_of(run_step(tmp_path / "second", files, spec_for(folder / "src")))
    assert_same_outputs(resumed, whole)
    assert runs[:5] == [0, 1, 2, 3, 4] and not set(runs[:5]) & set(runs[5:]) and len(runs) > 10  # none read twice
