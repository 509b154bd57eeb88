"""The store never uses a corrupt entry silently, deletes atomically, and cleans what killed runs leave behind."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from llmrecipe.cli import main
from llmrecipe.run import integrity
from llmrecipe.run.record import RunRecord
from llmrecipe.run.reporter import LineReporter
from llmrecipe.run.scheduler import Scheduler
from llmrecipe.run.status import step_states, step_status
from llmrecipe.run.store import MANIFEST, Store
from llmrecipe.run.verify import verify_plan, verify_store
from tests.test_scheduler import Echo, make_plan, run


class Nested(Echo):
    """Echo that also writes a file in a subfolder, as training steps do (best/model.safetensors)."""

    def __call__(self, spec, ctx):
        metrics = super().__call__(spec, ctx)
        (ctx.out_dir / "best").mkdir()
        (ctx.out_dir / "best" / "weights.bin").write_bytes(bytes(range(256)) * 4)
        return metrics


def flip_byte(path: Path, offset: int = 10, keep_mtime: bool = False) -> None:
    stat = path.stat()
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))
    if keep_mtime:  # damage that leaves the stat alone, like a failing disk
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_manifest_lists_every_output_file_with_size_and_sha256(tmp_path):
    run(tmp_path, make_plan(tmp_path), Nested())
    folder = Store(tmp_path).path("b-1")
    files = json.loads((folder / MANIFEST).read_text())["files"]
    assert sorted(files) == ["best/weights.bin", "out.txt"]
    assert files["best/weights.bin"] == {"size": 1024, "sha256": integrity.sha256_file(folder / "best" / "weights.bin")}


def test_a_flipped_byte_is_found_before_use_and_the_step_computed_again(tmp_path):
    plan = make_plan(tmp_path)
    run(tmp_path, plan, Nested())
    flip_byte(Store(tmp_path).path("b-1") / "best" / "weights.bin")
    assert step_states(plan, Store(tmp_path)) == {"a": "cached", "b": "corrupt", "c": "cached"}
    again = Nested()
    report, store = run(tmp_path, plan, again)
    assert again.calls == ["b"]
    assert [o.state for o in report.outcomes] == ["cached", "done", "cached"]
    assert "best/weights.bin: sha256" in report.outcomes[1].note
    assert store.check("b-1", full=True).ok


def test_a_truncated_file_fails_the_size_check(tmp_path):
    run(tmp_path, make_plan(tmp_path), Nested())
    path = Store(tmp_path).path("a-1") / "best" / "weights.bin"
    path.write_bytes(path.read_bytes()[:100])
    checked = Store(tmp_path).check("a-1")
    assert checked.state == "corrupt"
    assert [str(d) for d in checked.drifts] == ["best/weights.bin: size 100 bytes, the manifest says 1024"]


def test_unchanged_files_are_not_hashed_again_but_verify_hashes_everything(tmp_path, monkeypatch):
    plan = make_plan(tmp_path)
    run(tmp_path, plan, Nested())
    hashed = []
    original = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda path: hashed.append(path) or original(path))
    assert set(step_states(plan, Store(tmp_path)).values()) == {"cached"}
    assert hashed == []  # the hash cache vouches for every file committed
    # Damage that keeps size and mtime is found by a full check only, which re-hashes every file of the entry.
    flip_byte(Store(tmp_path).path("c-1") / "out.txt", offset=1, keep_mtime=True)
    assert Store(tmp_path).check("c-1").ok and hashed == []
    assert not Store(tmp_path).check("c-1", full=True).ok and len(hashed) == 2
    verified = Nested()
    record = RunRecord(tmp_path, "t")
    Scheduler(Store(tmp_path), {"echo": verified}, LineReporter(), verify=True).run(plan, record)  # run --verify
    record.close()
    assert verified.calls == ["c"]


def test_an_empty_or_unreadable_manifest_is_a_corrupt_entry_not_a_traceback(tmp_path, capsys):
    plan = make_plan(tmp_path)
    run(tmp_path, plan, Echo())
    (Store(tmp_path).path("a-1") / MANIFEST).write_text("")
    (Store(tmp_path).path("b-1") / MANIFEST).write_bytes(b"\xff\xfe{")
    rows = {row["step"]: row for row in step_status(plan, Store(tmp_path))}
    assert rows["a"]["state"] == rows["b"]["state"] == "corrupt"
    assert rows["a"]["drifts"] == ["manifest.json: empty"]
    echo = Echo()
    run(tmp_path, plan, echo)
    assert echo.calls == ["a", "b"]  # c's input folders were rebuilt under the same fingerprints


def test_verify_names_every_drifted_file_and_an_incomplete_entry(tmp_path):
    plan = make_plan(tmp_path)
    run(tmp_path, plan, Nested())
    store = Store(tmp_path)
    flip_byte(store.path("a-1") / "out.txt", offset=0, keep_mtime=True)
    (store.path("b-1") / "best" / "weights.bin").unlink()
    (store.path("b-1") / "stray.txt").write_text("?")
    (tmp_path / "store" / "half").mkdir()
    result = verify_plan(plan)
    assert result.entries == 3 and result.files == 6 and not result.ok
    assert [line.split(str(tmp_path))[1] for line in result.drifted] == [
        "/store/a-1/out.txt (step a): sha256 " + result.drifted[0].split("sha256 ")[1],
        "/store/b-1/best/weights.bin (step b): missing",
        "/store/b-1/stray.txt (step b): not in the manifest",
    ]
    whole = verify_store(tmp_path)
    assert whole.entries == 4 and any("half: no manifest.json" in line for line in whole.drifted)


def test_verify_cli_exits_1_on_drift_and_0_when_clean(tmp_path, capsys):
    plan = make_plan(tmp_path)
    run(tmp_path, plan, Echo())
    assert main(["verify", "--workdir", str(tmp_path)]) == 0
    assert "verified 3 entries, 3 files" in capsys.readouterr().out
    flip_byte(Store(tmp_path).path("b-1") / "out.txt", offset=1)
    assert main(["verify", "--workdir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"drifted: {tmp_path}/store/b-1/out.txt (step b): sha256" in out and "1 drifted" in out


def test_entries_from_before_file_lists_are_trusted_but_called_unverifiable(tmp_path):
    plan = make_plan(tmp_path)
    run(tmp_path, plan, Echo())
    path = Store(tmp_path).path("a-1") / MANIFEST
    manifest = json.loads(path.read_text())
    del manifest["files"]
    path.write_text(json.dumps(manifest))
    assert step_states(plan, Store(tmp_path))["a"] == "cached"
    result = verify_plan(plan)
    assert result.ok and len(result.unverifiable) == 1


def test_force_moves_the_entry_away_in_one_rename_before_deleting_it(tmp_path, monkeypatch):
    plan = make_plan(tmp_path)
    run(tmp_path, plan, Nested())
    deleted = []

    def killed_while_deleting(path, ignore_errors=False):  # a kill after the first file went
        victim = next(p for p in Path(path).rglob("*") if p.is_file())
        victim.unlink()
        deleted.append(victim)
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed_while_deleting)
    with pytest.raises(KeyboardInterrupt):
        Store(tmp_path).forget("b-1")
    monkeypatch.undo()
    assert "trash" in deleted[0].parts  # what was deleted had left the store first
    assert not Store(tmp_path).path("b-1").exists()
    echo = Nested()
    run(tmp_path, plan, echo)
    assert echo.calls == ["b"] and not list((tmp_path / "trash").iterdir())


def test_scratch_of_a_committed_step_left_by_a_kill_is_cleaned_at_the_next_run(tmp_path):
    plan = make_plan(tmp_path)
    run(tmp_path, plan, Echo())
    store = Store(tmp_path)
    leftover = store.scratch("b-1")  # a kill between the commit rename and the scratch cleanup
    (leftover / "checkpoint.bin").write_bytes(b"old")
    unfinished = store.scratch("d-1")  # resume state of a step still to finish stays
    (unfinished / "checkpoint.bin").write_bytes(b"keep")
    staging = store.new_staging("e-1")
    with store.entry_lock("e-1", {"step": "e"}):  # another live run is writing it: left alone
        run(tmp_path, plan, Echo())
        assert staging.exists()
    assert not leftover.exists() and unfinished.exists()
    run(tmp_path, plan, Echo())
    assert not staging.exists()


def test_a_manifest_listing_malformed_or_outside_paths_is_corrupt(tmp_path):
    run(tmp_path, make_plan(tmp_path), Echo())
    path = Store(tmp_path).path("a-1") / MANIFEST
    manifest = json.loads(path.read_text())
    manifest["files"] = {**manifest["files"], "../../../etc/hostname": {"size": 1, "sha256": "0"}, "x": {"size": "?"}}
    path.write_text(json.dumps(manifest))
    checked = Store(tmp_path).check("a-1")
    assert checked.state == "corrupt" and len(checked.drifts) == 2
