"""A full disk or a read-only workdir: one clear line naming the folder, the free space and what was kept; no
partial store entry; and after space is freed the same command succeeds.

The injected variant fills the disk at every write a run makes, one after the other (`DiskFull`: from the k-th
write on, every write fails with ENOSPC, as on a real full disk). Where the machine lets an unprivileged user
namespace mount a tmpfs, a real small disk fills too, and a read-only bind mount shows that status, plan, verify
and generate still answer from a workdir nobody may write.
"""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from llmrecipe import steps
from llmrecipe.cli import main
from llmrecipe.run.store import Store
from tests.conftest import REPO, write_tiny_recipe
from tests.fake_steps import FAKES

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class DiskFull:
    """Counts write sites (opening a file to write, mkdir, rename); from the `fail_from`-th on, each raises
    OSError(ENOSPC), and so does every write to a file opened before. `fail_from=None` only counts."""

    def __init__(self, fail_from: int | None = None):
        self.fail_from = fail_from
        self.count = 0
        self.failed: list[str] = []

    @property
    def full(self) -> bool:
        return self.fail_from is not None and self.count >= self.fail_from

    def tick(self, target: object) -> None:
        self.count += 1
        self.check(target)

    def check(self, target: object) -> None:
        if self.full:
            self.failed.append(str(target))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real_open, real_os_open = builtins.open, os.open

        def open_(file, mode="r", *args, **kwargs):
            if not any(flag in mode for flag in "wax+"):
                return real_open(file, mode, *args, **kwargs)
            self.tick(file)
            return _Guarded(real_open(file, mode, *args, **kwargs), self, file)

        def os_open(path, flags, *args, **kwargs):
            if flags & WRITE_FLAGS:
                self.tick(path)
            return real_os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        for name in ("replace", "rename", "mkdir"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._counted(real))

    def _counted(self, real):
        def counted(path, *args, **kwargs):
            self.tick(path)
            return real(path, *args, **kwargs)
        return counted


class _Guarded:
    """A file whose writes count (and fail once the disk is full)."""

    def __init__(self, file, disk: DiskFull, name: object):
        self._file, self._disk, self._name = file, disk, name

    def write(self, data):
        self._disk.check(self._name)
        return self._file.write(data)

    def __enter__(self):
        self._file.__enter__()
        return self

    def __exit__(self, *exc):
        return self._file.__exit__(*exc)

    def __iter__(self):
        return iter(self._file)

    def __getattr__(self, name):
        return getattr(self._file, name)


def run_cli(recipe: Path, monkeypatch, capsys, disk: DiskFull | None = None) -> tuple[int, str]:
    with monkeypatch.context() as patch:
        for kind, fake in FAKES.items():
            patch.setitem(steps.EXECUTORS, kind, fake)
        if disk is not None:
            disk.install(patch)
        code = main(["run", str(recipe), "--only", "corpus@tok"])
    return code, capsys.readouterr().err


@pytest.mark.e2e
def test_a_disk_that_fills_at_any_write_gives_one_line_keeps_no_partial_entry_and_recovers(tmp_path, monkeypatch, capsys):
    recipe = write_tiny_recipe(tmp_path, steps=20)
    run_cli(write_tiny_recipe(tmp_path / "warm", steps=20), monkeypatch, capsys)  # once-per-process reads done
    counting = DiskFull()
    assert run_cli(write_tiny_recipe(tmp_path / "count", steps=20), monkeypatch, capsys, counting)[0] == 0
    assert counting.count > 30
    sites = set()
    for k in range(1, counting.count + 1):
        disk = DiskFull(fail_from=k)
        code, err = run_cli(recipe, monkeypatch, capsys, disk)
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 1 and len(errors) == 1, f"write {k} ({disk.failed[:1]}): exit {code}\n{err}"
        assert "no space left on device" in errors[0] and " free in " in errors[0] and "; kept: " in errors[0], errors[0]
        assert "Traceback" not in err
        sites.add(_site(disk.failed[0], tmp_path / "work"))
        store = Store(tmp_path / "work")
        for fingerprint in store.fingerprints():
            assert store.check(fingerprint, full=True).ok, f"write {k}: partial entry {fingerprint}"
        if k % 5 == 0 or k == counting.count:  # space freed: the same command succeeds
            code, err = run_cli(recipe, monkeypatch, capsys)
            assert code == 0, err
        shutil.rmtree(tmp_path / "work", ignore_errors=True)
    assert {"lock", "run record", "store commit", "staging", "scratch", "index", "manifest", "report"} <= sites, sites


def _site(path: str, workdir: Path) -> str:
    relative = Path(path).relative_to(workdir).parts if Path(path).is_relative_to(workdir) else ("?",)
    if not relative:
        return "workdir"
    top, name = relative[0], Path(path).name
    if top == "runs":
        return {"manifest.json": "manifest", "report.json": "report", "report.md": "report"}.get(name, "run record")
    if top == "staging":
        return "store commit" if name == "manifest.json" or len(relative) == 2 else "staging"
    return {"locks": "lock", "scratch": "scratch", "store": "store commit", "hashes": "hashes"}.get(
        top, "index" if "index" in name else top)


def test_a_failing_step_on_a_full_disk_names_the_folder_free_space_and_what_was_kept(tmp_path, monkeypatch, capsys):
    recipe = write_tiny_recipe(tmp_path, steps=20)

    def full(spec, ctx):  # what safetensors raises from Rust
        raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                           "\"No space left on device\" })")

    with monkeypatch.context() as patch:
        for kind, fake in FAKES.items():
            patch.setitem(steps.EXECUTORS, kind, fake)
        patch.setitem(steps.EXECUTORS, "tokenize", full)
        code = main(["run", str(recipe)])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err
    assert errors[0].startswith("error: step 'corpus@tok' failed: no space left on device (while corpus@tok ran): ")
    assert f" free in {tmp_path / 'work'}; kept: the store's finished steps (corpus, tok)" in errors[0]


# --- a real small disk and a read-only workdir (Linux user namespaces) -----------------------------------------


def namespace_shell(script: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `script` as root of a new user and mount namespace (where mounts need no privilege), or skip."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    probe = subprocess.run(["unshare", "-Urm", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"this machine allows no user namespaces: {probe.stderr.decode().strip()}")
    return subprocess.run(["unshare", "-Urm", "bash", "-c", script], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.mark.e2e
@pytest.mark.slow  # two real runs; the default suite fills the disk by injection at every write site instead
def test_a_real_full_disk_stops_with_one_line_and_the_next_run_after_freeing_space_succeeds(tmp_path):
    recipe = write_tiny_recipe(tmp_path, steps=30)
    work = tmp_path / "work"
    work.mkdir()
    done = namespace_shell(textwrap.dedent(f"""
        set -u
        cd {tmp_path}
        mount -t tmpfs -o size=400k tmpfs {work}
        {sys.executable} -m llmrecipe run {recipe} > /dev/null 2> first.txt; echo "first exit $?"
        {sys.executable} -m llmrecipe verify --workdir {work}; echo "verify exit $?"
        mount -o remount,size=64m {work}
        {sys.executable} -m llmrecipe run {recipe} > /dev/null 2> second.txt; echo "second exit $?"
        {sys.executable} -m llmrecipe verify {recipe}; echo "verify exit $?"
    """))
    first = (tmp_path / "first.txt").read_text()
    errors = [line for line in first.splitlines() if line.startswith("error:")]
    print(done.stdout, first[-2000:])
    assert "first exit 1" in done.stdout and len(errors) == 1 and "Traceback" not in first, first
    assert "no space left on device" in errors[0] and f"free in {work}; kept: " in errors[0]
    assert done.stdout.count("verify exit 0") == 2 and "all match their manifests" in done.stdout  # no partial entry
    assert "second exit 0" in done.stdout, (tmp_path / "second.txt").read_text()


@pytest.mark.e2e
def test_a_read_only_workdir_answers_status_plan_verify_and_generate(full_run):
    work = full_run.parent / "work"
    done = namespace_shell(textwrap.dedent(f"""
        set -u
        mount --bind {work} {work} && mount -o remount,bind,ro {work}
        touch {work}/probe 2>/dev/null && echo "still writable"
        cd {full_run.parent}
        {sys.executable} -m llmrecipe status {full_run} --json > status.json 2> status.err; echo "status exit $?"
        {sys.executable} -m llmrecipe plan {full_run} --json > plan.json 2> plan.err; echo "plan exit $?"
        {sys.executable} -m llmrecipe verify {full_run}; echo "verify exit $?"
        {sys.executable} -m llmrecipe generate {full_run} base --prompt "The king" --max-tokens 4 --seed 1 \
            2> generate.err; echo "generate exit $?"
        {sys.executable} -m llmrecipe run {full_run} > /dev/null 2> run.err; echo "run exit $?"; cat run.err
    """))
    out = done.stdout
    assert "still writable" not in out, out
    for command in ("status", "plan", "verify", "generate"):
        assert f"{command} exit 0" in out, (out, done.stderr)
    assert "run exit 1" in out and "Traceback" not in out
    assert f"error: cannot write (" in out and f"{work} is read-only or not writable" in out
    for name in ("status.json", "plan.json", "status.err", "plan.err", "generate.err", "run.err"):
        (full_run.parent / name).unlink()
