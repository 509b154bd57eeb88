"""Data-step resume: a step killed mid-run keeps its finished shard jobs, reading and decisions in its scratch
folder, and the next run continues from them to the same bytes as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmrecipe.data import shardwork
from tests.data_helpers import assert_same_outputs, outputs_of, planted_corpus, run_step, spec_for


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """About 5 MB of documents: four 1 MB shards a pass, two passes (normalize to the dedups, then the split)."""
    folder = tmp_path_factory.mktemp("resume")
    files = planted_corpus(folder / "src", docs=8_000, files=4)
    clean = outputs_of(run_step(folder / "clean", files, spec_for(folder / "src")))
    return folder, files, clean


@pytest.mark.parametrize("kill_after", [2, 4, 6, 8])
def test_a_step_killed_mid_run_resumes_from_its_finished_shards(corpus, tmp_path, monkeypatch, kill_after):
    """Killed after the k-th of 8 shard jobs saved its result (while reading, before the dedups decide, in the
    split pass, before the splits are merged), the next run runs only the jobs that had not finished, and writes what an uninterrupted run writes."""
    folder, files, clean = corpus
    saved, runs = shardwork.save_result, []

    def save_then_maybe_die(result, path):
        saved(result, path)
        runs.append(path.name)
        if len(runs) == kill_after and not finished:
            raise Killed

    finished: set[str] = set()

    monkeypatch.setattr(shardwork, "save_result", save_then_maybe_die)
    with pytest.raises(Killed):
        run_step(tmp_path / "first", files, spec_for(folder / "src"))
    finished.update(runs)
    runs.clear()
    work = tmp_path / "first" / "scratch" / "work"
    if kill_after > 4:  # the first pass is complete: its input shards are gone, its outputs kept
        assert not list(work.glob("read-*.parquet")) and len(list(work.glob("pass1-*.parquet"))) == 4
    (tmp_path / "second").mkdir()
    os.rename(tmp_path / "first" / "scratch", tmp_path / "second" / "scratch")  # the store keeps scratch, not out
    resumed = outputs_of(run_step(tmp_path / "second", files, spec_for(folder / "src")))
    assert_same_outputs(resumed, clean)
    assert finished and not finished & set(runs)  # no finished job ran again
    assert not (tmp_path / "second" / "scratch" / "work").exists()  # cleaned once the outputs were written


def test_a_work_folder_of_another_batch_size_is_not_reused(corpus, tmp_path, monkeypatch):
    folder, files, clean = corpus
    saved = shardwork.save_result

    def die(result, path):
        saved(result, path)
        raise Killed

    monkeypatch.setattr(shardwork, "save_result", die)
    with pytest.raises(Killed):
        run_step(tmp_path / "first", files, spec_for(folder / "src", batch_mb=2))
    monkeypatch.setattr(shardwork, "save_result", saved)
    (tmp_path / "second").mkdir()
    os.rename(tmp_path / "first" / "scratch", tmp_path / "second" / "scratch")
    assert_same_outputs(outputs_of(run_step(tmp_path / "second", files, spec_for(folder / "src"))), clean)


KILLED_STEP = """
import json, sys
from pathlib import Path
from tests.data_helpers import run_step
files, spec, root = json.loads(sys.argv[1])
from llmrecipe.plan.plan import ExternalFile
run_step(Path(root), [ExternalFile(**f) for f in files], spec)
"""


@pytest.mark.e2e
def test_sigkill_with_two_workers_then_resume(corpus, tmp_path):
    """The real thing: the step's process group (the step and its two worker processes) killed with SIGKILL once
    the first pass has finished shards, then the step run again."""
    folder, files, clean = corpus
    spec = spec_for(folder / "src", workers=2)
    argument = json.dumps([[f.model_dump() for f in files], spec, str(tmp_path / "first")])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", KILLED_STEP, argument], start_new_session=True, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    work = tmp_path / "first" / "scratch" / "work"
    deadline = time.monotonic() + 120
    while len(list(work.glob("pass1-*.result"))) < 2 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(child.pid, signal.SIGKILL)
    child.wait()
    kept = sorted(path.name for path in work.glob("*.result"))
    assert kept, "the step ended before it could be killed"
    (tmp_path / "second").mkdir()
    os.rename(tmp_path / "first" / "scratch", tmp_path / "second" / "scratch")
    assert_same_outputs(outputs_of(run_step(tmp_path / "second", files, spec)), clean)
