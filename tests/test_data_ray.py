"""The Ray engine on a Ray instance started inside the test (2 CPUs, shared by the module): byte-identical outputs to
the local engine, a worker killed mid-run changes nothing, and a step killed on one engine resumes on the other."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from llmrecipe.data import shardwork
from tests.data_helpers import planted_corpus, run_step, spec_for

pytestmark = pytest.mark.e2e  # whole recipes, processes or servers: not in the inner loop

ray = pytest.importorskip("ray", reason="the Ray engine needs the ray extra: pip install -e '.[ray]'")

FILES = ("train.parquet", "val.parquet", "test.parquet", "dropped.parquet", "stats.json")


def digests(out: Path) -> dict[str, str]:
    return {name: hashlib.sha256((out / name).read_bytes()).hexdigest() for name in FILES}


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four 1 MB shards a pass of documents with planted exact and near copies, and the local engine's outputs."""
    folder = tmp_path_factory.mktemp("ray")
    files = planted_corpus(folder / "src", docs=8_000, files=4)
    local = digests(run_step(folder / "local", files, spec_for(folder / "src", workers=2)))
    return folder, files, local


def test_ray_engine_writes_the_local_engines_bytes(cluster, corpus, tmp_path):
    folder, files, local = corpus
    out = run_step(tmp_path, files, spec_for(folder / "src", engine="ray"))
    assert digests(out) == local


def test_ray_engine_with_stratified_split_and_mixing_matches_local(cluster, corpus, tmp_path):
    """More passes: a document pass before a stratified split, and a mixing decision over two sources."""
    folder, files, _ = corpus
    spec = spec_for(folder / "src", split={"val": 0.1, "test": 0.1, "stratify": True}, mix_seed=5)
    spec["sources"] = [{**spec["sources"][0], "weight": 1.0}, {**spec["sources"][0], "glob": "part-[01].jsonl", "weight": 2.0}]
    two_sources = files + [file.model_copy(update={"source": 1}) for file in files[:2]]
    outputs = [digests(run_step(tmp_path / engine, two_sources, {**spec, "engine": engine})) for engine in ("local", "ray")]
    assert outputs[0] == outputs[1]


def ray_task_processes() -> list[int]:
    """Processes running one of the step's Ray tasks (Ray titles a busy worker with its function's name)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_bytes().startswith(b"ray::run_on_node"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def test_a_killed_ray_worker_changes_nothing(cluster, corpus, tmp_path):
    """SIGKILL to a worker process while it runs a shard job: Ray runs the job again, the outputs are the same."""
    folder, files, local = corpus
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            busy = ray_task_processes()
            if busy:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.005)

    killer = threading.Thread(target=kill_one)
    killer.start()
    try:
        out = run_step(tmp_path, files, spec_for(folder / "src", engine="ray"))
    finally:
        killer.join()
    assert killed, "no Ray task was seen running"
    assert digests(out) == local


def test_a_step_killed_on_the_local_engine_resumes_on_ray(cluster, corpus, tmp_path, monkeypatch):
    folder, files, local = corpus
    saved, runs = shardwork.save_result, []

    def save_then_die(result, path):
        saved(result, path)
        runs.append(path.name)
        if len(runs) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(shardwork, "save_result", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_step(tmp_path / "first", files, spec_for(folder / "src"))
    monkeypatch.setattr(shardwork, "save_result", saved)
    (tmp_path / "second").mkdir()
    os.rename(tmp_path / "first" / "scratch", tmp_path / "second" / "scratch")
    assert digests(run_step(tmp_path / "second", files, spec_for(folder / "src", engine="ray"))) == local
