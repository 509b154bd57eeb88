"""Sources read in jobs: per-file jobs log what one reader of all the files logs, and with worker processes the
step's own process parses no source file."""

from __future__ import annotations

import json

import pytest

from llmrecipe.data import read
from llmrecipe.data.read import Reader
from llmrecipe.data.readjobs import merged_log, read_jobs
from llmrecipe.recipe.data import Source
from tests.data_helpers import outputs_of, planted_corpus, run_step, spec_for
from tests.test_data_step import external, write_files


def test_per_file_jobs_log_what_one_reader_logs(tmp_path):
    """Bad records of two kinds spread over three files, more than the samples kept per kind: the merged log has
    the same counts, the same first samples and the same key order as one reader's."""
    lines = {f"f{k}.jsonl": "".join([json.dumps({"text": f"doc {k} {n}"}) + "\n" for n in range(4)]
                                    + ["{broken\n"] * 3 + [json.dumps({"text": 5}) + "\n"] * (k + 1))
             for k in range(3)}
    write_files(tmp_path, lines)
    files = external(tmp_path, sorted(lines))
    source = Source(path=str(tmp_path))
    whole = Reader(source, 0, "skip", [])
    frames = list(whole.documents(files))
    jobs = read_jobs([source], [files], 1 << 30, folder=tmp_path, policy="skip", metadata=[], downloads=None,
                     block_bytes=1 << 20)
    assert len(jobs) == 3
    merged = merged_log([job.run().log for job in jobs])
    assert json.dumps(merged.as_dict()) == json.dumps(whole.log.as_dict())
    assert merged.bad_records == {"malformed_json": 9, "text_not_string": 6} and sum(len(f) for f in frames) == 12


def test_a_source_with_max_docs_is_read_by_one_job_in_file_order(tmp_path):
    write_files(tmp_path, {f"f{k}.jsonl": json.dumps({"text": "x"}) + "\n" for k in range(3)})
    files = external(tmp_path, ["f0.jsonl", "f1.jsonl", "f2.jsonl"])
    jobs = read_jobs([Source(path=str(tmp_path), max_docs=2), Source(path=str(tmp_path))], [files, files], 1 << 30,
                     folder=tmp_path, policy="skip", metadata=[], downloads=None, block_bytes=1 << 20)
    assert [(job.index, len(job.files)) for job in jobs] == [(0, 3), (1, 1), (1, 1), (1, 1)]
    assert jobs[0].run().log.docs == 2


def test_with_workers_the_steps_process_parses_no_source(tmp_path, monkeypatch):
    """Four files, two worker processes: the read jobs run in the workers (this process's Reader is broken and
    never called), and the outputs are those of a step that read in this process (one worker)."""
    files = planted_corpus(tmp_path / "src", docs=2_000, files=4)
    alone = outputs_of(run_step(tmp_path / "alone", files, spec_for(tmp_path / "src", workers=1)))

    def broken(*args, **kwargs):
        raise AssertionError("a source was parsed in the step's own process")

    monkeypatch.setattr(read.Reader, "documents", broken)
    with pytest.raises(AssertionError, match="parsed in the step's own process"):
        run_step(tmp_path / "check", files, spec_for(tmp_path / "src", workers=1))  # the patch does bite in-process
    workers = outputs_of(run_step(tmp_path / "workers", files, spec_for(tmp_path / "src", workers=2)))
    assert workers["stats"] == alone["stats"]
    for name in ("train", "val", "test", "dropped"):
        assert workers[name].equals(alone[name])
