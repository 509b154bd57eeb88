"""`python -m tests.fake_steps ARGS...` is `llmrecipe ARGS...` with stand-in executors: no torch, no polars; and
`Run`, which starts it in its own process group and collects what it says.

The pretrain stand-in is a long-running loop that behaves as the trainer must towards stop requests: its steps
run inside `preemption.deferred()`, and at each step boundary it asks `preemption.pending()`; asked to stop, it
writes a checkpoint and raises `preemption.Interrupted`. Its "weights" are a hash chain over the steps, so an
interrupted and resumed run can be compared with an uninterrupted one byte for byte.

Environment: FAKE_STEP_SECONDS (sleep per training step, default 0.02), FAKE_DATA_SECONDS (sleep of the data step,
default 0), FAKE_NEVER_SAFE=1 (the loop never reaches a safe point: only a second signal stops it), FAKE_CALLS
(a file each executor call appends its step name to).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from llmrecipe import preemption
from llmrecipe.run.context import StepContext

REPO = Path(__file__).resolve().parent.parent


def _note_call(ctx: StepContext) -> None:
    if calls := os.environ.get("FAKE_CALLS"):
        with open(calls, "a") as f:
            f.write(ctx.name + "\n")


def fake_data(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    _note_call(ctx)
    ctx.log("reading")
    time.sleep(float(os.environ.get("FAKE_DATA_SECONDS", "0")))
    (ctx.out_dir / "train.txt").write_text("the king speaks\n" * 10)
    return {"documents": 10}


def fake_file(name: str):
    def executor(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
        _note_call(ctx)
        upstream = "".join(sorted(str(p.name) for p in ctx.inputs.values()))
        (ctx.out_dir / name).write_text(json.dumps({"step": ctx.name, "inputs": upstream}))
        return {}
    return executor


def fake_pretrain(spec: dict[str, Any], ctx: StepContext) -> dict[str, Any]:
    _note_call(ctx)
    checkpoint = ctx.scratch_dir / "checkpoint.json"
    state = json.loads(checkpoint.read_text()) if checkpoint.exists() else {"step": 0, "weights": "init"}
    if state["step"]:
        ctx.log(f"resumed from checkpoint at step {state['step']}")
    pause = float(os.environ.get("FAKE_STEP_SECONDS", "0.02"))
    with preemption.deferred():
        while state["step"] < spec["total_steps"]:
            time.sleep(pause)  # the work of one step
            state = {"step": state["step"] + 1,
                     "weights": hashlib.sha256(f"{state['weights']}:{state['step']}".encode()).hexdigest()}
            ctx.log(f"step {state['step']}")
            if state["step"] % spec["checkpoint_every"] == 0:
                _save(checkpoint, state)
            if os.environ.get("FAKE_NEVER_SAFE") != "1" and (request := preemption.pending()) is not None:
                _save(checkpoint, state)
                raise preemption.Interrupted(request, saved=f"checkpoint at step {state['step']}")
    (ctx.out_dir / "weights.txt").write_text(state["weights"])
    return {"steps": state["step"]}


def _save(path: Path, state: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    os.replace(temporary, path)


FAKES = {"data": fake_data, "tokenizer": fake_file("tokenizer.json"), "tokenize": fake_file("tokens.bin"),
         "pretrain": fake_pretrain, "finetune": fake_file("model.bin"), "evaluate": fake_file("results.json"),
         "export": fake_file("model.onnx")}


class Run:
    """`llmrecipe run` (with the stand-in executors, unless `module="llmrecipe"`) in its own process group, its
    stderr read line by line."""

    def __init__(self, recipe: Path, *args: str, env: dict[str, str] | None = None, module: str = "tests.fake_steps"):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, "run", str(recipe), *args], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60) -> None:
        """Until a line containing `text` comes; fails if the run ends or `timeout` passes first."""
        deadline = time.monotonic() + timeout
        while not self.said(text):
            if self.process.poll() is not None:
                self._reader.join(5)
                assert self.said(text), f"the run ended without a line with {text!r}:\n{self.output()}"
                return
            assert time.monotonic() < deadline, f"no line with {text!r} in {timeout} s:\n{self.output()}"
            time.sleep(0.01)

    def said(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def finish(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def output(self) -> str:
        return "\n".join(self.lines)


def main(argv: list[str]) -> int:
    from llmrecipe import steps
    from llmrecipe.cli import main as cli_main

    steps.EXECUTORS.update(FAKES)  # the api module holds this same table
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
