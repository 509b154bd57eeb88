"""Where a training step's checkpoints lie in its scratch folder, readable without torch (`status` and `plan` ask
how far an interrupted step got)."""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS = "checkpoints"
"""The folder under a step's scratch folder that holds its checkpoints."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def saved_step(scratch_dir: Path) -> int | None:
    """The optimizer step of the newest complete checkpoint (a complete one has been renamed into place), if any."""
    names = sorted(p.name for p in (scratch_dir / CHECKPOINTS).glob("step-*")) if scratch_dir.is_dir() else []
    return int(names[-1].removeprefix("step-")) if names else None
