"""`python -m tests.chaos.kill_hook run RECIPE` is `llmrecipe run RECIPE` that SIGKILLs its own process group at a
moment too short to hit from outside, named by CHAOS_KILL_AT=STAGE:POINT:DELAY, or (CHAOS_GUARD=FINGERPRINT) as
that store entry's manifest.json is opened in staging, whichever comes first. The moments:

- `checkpoint:mkdir:D` D seconds after a checkpoint's temporary folder is made (while its tensors are written),
- `checkpoint:state:0` as the checkpoint's state.json is opened (tensors written, state not yet),
- `checkpoint:rename:D` D seconds after the checkpoint is renamed into place begins (then the old one is pruned),
- `commit:manifest:0` as a store entry's manifest.json is opened in staging,
- `commit:rename:D` D seconds after the staging folder's rename into the store begins (then scratch is cleaned).

An audit hook (sys.addaudithook) sees the process's own file operations; the code under test is unchanged. Where
the kill landed goes to the file CHAOS_NOTE names first.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any


def matches(stage: str, point: str, event: str, args: tuple[Any, ...]) -> str | None:
    """The path of the operation when (event, args) is the moment asked for."""
    if event not in ("os.mkdir", "open", "os.rename") or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return None
    path = os.fsdecode(args[0])
    if stage == "checkpoint" and ".partial-step-" in path:
        if point == "mkdir" and event == "os.mkdir" and Path(path).name.startswith(".partial-step-"):
            return path
        if point == "state" and event == "open" and path.endswith("state.json") and "w" in str(args[1] or ""):
            return path
        if point == "rename" and event == "os.rename" and Path(path).name.startswith(".partial-step-"):
            return path
    if stage == "commit" and f"{os.sep}staging{os.sep}" in path:
        if point == "manifest" and event == "open" and path.endswith("manifest.json") and "w" in str(args[1] or ""):
            return path
        if point == "rename" and event == "os.rename" and f"{os.sep}store{os.sep}" in os.fsdecode(args[1]):
            return path
    return None


def install(spec: str, guard: str) -> None:
    """Kill at the moment `spec` names (if any), or as the entry of fingerprint `guard` is committed (if given)."""
    stage, point, delay = spec.split(":") if spec else ("", "", "0")
    fired = []

    def kill() -> None:
        os.killpg(os.getpgrp(), signal.SIGKILL)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if fired:
            return
        if (path := matches(stage, point, event, args)) is not None:
            where = {"stage": stage, "point": point, "path": path}
        elif guard and (path := matches("commit", "manifest", event, args)) is not None and \
                Path(path).parent.name.startswith(f"{guard}-"):
            where = {"stage": "commit", "point": "guard", "path": path}
        else:
            return
        fired.append(path)  # first, so the note written below does not trigger it again
        Path(os.environ["CHAOS_NOTE"]).write_text(json.dumps(where))
        if where["point"] != "guard" and float(delay) > 0:
            threading.Timer(float(delay), kill).start()
        else:
            kill()

    sys.addaudithook(hook)


if __name__ == "__main__":
    install(os.environ.get("CHAOS_KILL_AT", ""), os.environ.get("CHAOS_GUARD", ""))
    from llmrecipe.cli import main

    sys.exit(main(sys.argv[1:]))
