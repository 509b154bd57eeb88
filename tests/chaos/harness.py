"""Kill `llmrecipe run` with SIGKILL (its whole process group) at chosen stages and random moments, resume, repeat.

Most kills come from outside, a random time after the targeted step printed that it started. Two moments are too
short to hit from outside (a checkpoint write of a tiny model, a store commit take milliseconds): for those,
`tests/chaos/kill_hook.py` watches the process's own file operations (an audit hook) and kills its process group
from inside, a random fraction of a millisecond into the write. The same hook guards every attempt at a step: if
the moment drawn comes after the step's work (a step that is quick once its libraries are loaded), the kill lands
as the step is about to be committed, so that no attempt lets its step finish and its later targets pass.

After every kill the workdir is checked: no partial store entry (every entry matches its manifest, re-hashed), and
nothing in scratch that a later run would trust is broken (complete checkpoints load; JSON parses; safetensors
and parquet files are whole). The caller finishes with an uninterrupted resume and compares the stores.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from llmrecipe.run.store import Store
from tests.conftest import REPO
from tests.fake_steps import Run

STAGES = {"corpus": "data", "tok": "tokenizer", "corpus@tok": "tokenize", "base": "training", "eval": "evaluate",
          "onnx": "export", "chat": "finetune"}
"""The full recipe's steps and the stage a kill during each of them counts for."""
STEP_OF = {stage: step for step, stage in STAGES.items()}
HOOKED = {"checkpoint": "base", "commit": None}
"""Stages hit from inside the process: a checkpoint write of `base`, and the commit of whichever step is next."""
STARTED = re.compile(r"^\[(?P<step>[^\]]+)\] (?P<kind>[\w-]+): (running|resuming from checkpoint)$")
DONE = re.compile(r"^\[(?P<step>[^\]]+)\] (?P<kind>[\w-]+): (done in |cached, skipping)")


@dataclass
class Kill:
    target: str
    stage: str
    """Where the kill landed: the stage of the step that was running, `checkpoint` or `commit`."""
    detail: str


@dataclass
class Chaos:
    recipe: Path
    durations: dict[str, float]
    """Seconds each step took in an uninterrupted run: random kill moments are drawn inside them."""
    rng: random.Random
    kills: list[Kill] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Broken invariants seen after a kill."""
    skipped: list[str] = field(default_factory=list)

    @property
    def workdir(self) -> Path:
        return self.recipe.parent / "work"

    def per_stage(self) -> dict[str, int]:
        return dict(Counter(kill.stage for kill in self.kills))

    def run(self, schedule: list[str]) -> None:
        for target in schedule:
            step = STEP_OF.get(target, HOOKED.get(target))
            if step is not None and self._committed(step):
                self.skipped.append(target)  # an earlier kill landed late: this stage is finished already
                continue
            kill = self._attempt(target)
            if kill is None:
                self.skipped.append(target)
                continue
            self.kills.append(kill)
            self.problems += [f"after kill {len(self.kills)} ({kill.stage}): {p}" for p in check_workdir(self.workdir)]

    def _fingerprint(self, step: str) -> str:
        from llmrecipe import api

        return api.compile(api.load(self.recipe)).step(step).fingerprint

    def _committed(self, step: str) -> bool:
        return Store(self.workdir).check(self._fingerprint(step)).ok

    def _attempt(self, target: str) -> Kill | None:
        if target in HOOKED:
            return self._hooked_attempt(target)
        step = STEP_OF[target]
        process = Process(self.recipe, guard=self._fingerprint(step))
        if not process.wait_for_start(step):
            return None
        # Training resumes from its last checkpoint, so early kills keep its later moments for the next targets.
        delay = self.rng.uniform(0.05, 0.35 if target == "training" else 0.5) * self.durations[step]
        time.sleep(delay)
        process.kill()
        if (note := self._note()) is not None:  # the step's work ended before the moment drawn: killed at its commit
            return Kill(target, target, f"at its commit, before the {delay:.2f} s drawn ({note['path']})")
        running = process.running_step()
        stage = STAGES.get(running, "between steps") if running else "between steps"
        return Kill(target, stage, f"{delay:.2f} s after {step} started; {running or 'no step'} was running")

    def _hooked_attempt(self, target: str) -> Kill | None:
        point = self.rng.choice(["mkdir", "state", "rename"] if target == "checkpoint" else ["manifest", "rename"])
        delay = self.rng.uniform(0, 0.004) if point in ("mkdir", "rename") else 0.0
        step = HOOKED[target]
        process = Process(self.recipe, hook=f"{target}:{point}:{delay}", guard=step and self._fingerprint(step))
        code = process.finish(timeout=900)
        if code != -signal.SIGKILL:
            return None  # the run ended without meeting the moment (it finished)
        note = self._note() or {"point": "?", "path": "?"}
        if note["point"] == "guard":  # training went past its last checkpoint write: killed at the step's commit
            return Kill(target, "commit", f"{step} wrote no more checkpoints; killed at its commit ({note['path']})")
        return Kill(target, target, f"{point} +{delay * 1000:.1f} ms at {note['path']}")

    def _note(self) -> dict | None:
        """Where the kill hook fired, if it did (and forget it for the next attempt)."""
        note = self.workdir / "chaos-kill.json"
        if not note.exists():
            return None
        fired = json.loads(note.read_text())
        note.unlink()
        return fired


class Process(Run):
    """`llmrecipe run` in its own process group, through the kill hook: it kills at the `hook` moment, and as the
    `guard` fingerprint's entry is about to be committed (so an attempt at a step never lets it finish)."""

    def __init__(self, recipe: Path, hook: str | None = None, guard: str | None = None):
        env = {"CHAOS_KILL_AT": hook or "", "CHAOS_GUARD": guard or "",
               "CHAOS_NOTE": str(recipe.parent / "work" / "chaos-kill.json")}
        super().__init__(recipe, env=env, module="tests.chaos.kill_hook")

    def wait_for_start(self, step: str, timeout: float = 300) -> bool:
        """True once `step` started; False if the run ended (or skipped the step as cached) first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if (match := STARTED.match(line)) and match["step"] == step:
                    return True
                if (match := DONE.match(line)) and match["step"] == step:
                    self.finish()
                    return False
            if self.process.poll() is not None:
                self._reader.join(5)
                if not any((m := STARTED.match(line)) and m["step"] == step for line in self.lines):
                    return False
                return True
            time.sleep(0.005)
        raise AssertionError(f"{step} did not start in {timeout} s:\n" + "\n".join(self.lines[-20:]))

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.finish()

    def running_step(self) -> str | None:
        """The step that had started and not finished when the process died."""
        running = None
        for line in self.lines:
            if match := STARTED.match(line):
                running = match["step"]
            elif (match := DONE.match(line)) and match["step"] == running:
                running = None
        return running


def check_workdir(workdir: Path) -> list[str]:
    """Broken promises in a workdir a kill left: partial store entries, or broken files a later run would trust."""
    store = Store(workdir)
    problems = []
    for fingerprint in store.fingerprints():
        checked = store.check(fingerprint, full=True)
        if not checked.ok:
            problems.append(f"partial store entry {fingerprint[:12]}: {checked.state} {checked.summary()}")
    scratch = workdir / "scratch"
    for path in sorted(scratch.rglob("*")) if scratch.is_dir() else []:
        relative = path.relative_to(scratch)
        if not path.is_file() or any(part.startswith(".") or part.endswith(".tmp") for part in relative.parts):
            continue  # partial or temporary by its name: never trusted
        if problem := broken(path):
            problems.append(f"scratch/{relative}: {problem}")
    return problems


def broken(path: Path) -> str | None:
    """Why a file a later run would read as whole is not whole; None when it is (or is of a kind not checked)."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "np") as f:
                f.keys()
            _check_safetensors_length(path)
        elif path.suffix == ".parquet":
            import polars as pl

            pl.read_parquet(path)
    except Exception as error:  # any failure to read it whole is the finding
        return f"{type(error).__name__}: {error}"
    return None


def _check_safetensors_length(path: Path) -> None:
    data = path.read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    if len(data) != 8 + header_size + end:
        raise ValueError(f"{len(data)} bytes, the header describes {8 + header_size + end}")


def fresh_step_durations(recipe: Path, reference: Path, scratch: Path) -> dict[str, float]:
    """Seconds each step takes as the first step of a process (with its imports, as after a kill), measured by
    recomputing it alone in a copy of the reference workdir."""
    import shutil

    from llmrecipe import api

    workdir = scratch / "durations"
    shutil.copytree(reference / "store", workdir / "store")
    for step in api.compile(api.load(recipe), workdir=workdir).steps:
        done = subprocess.run([sys.executable, "-m", "llmrecipe", "run", str(recipe), "--workdir", str(workdir),
                               "--only", step.name, "--force", step.name], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
        assert done.returncode == 0, done.stderr
    durations = step_durations(workdir)
    shutil.rmtree(workdir)
    return durations


def step_durations(workdir: Path) -> dict[str, float]:
    """Seconds from step_started to step_done of each step, from the run records of uninterrupted runs (the
    latest for a step that ran in several)."""
    from datetime import datetime

    durations, started = {}, {}
    for record in sorted((workdir / "runs").iterdir()):
        for line in (record / "events.jsonl").read_text().splitlines():
            event = json.loads(line)
            moment = datetime.fromisoformat(event["time"]).timestamp()
            if event.get("event") == "step_started":
                started[event["step"]] = moment
            elif event.get("event") == "step_done":
                durations[event["step"]] = moment - started[event["step"]]
    return durations
