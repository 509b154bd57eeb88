"""Training metrics as JSONL that survives a resume (lines past the resumed step are dropped), optionally
mirrored as TensorBoard events, and the files a training step leaves in its output folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from llmrecipe.errors import StepError
from llmrecipe.plots import training_curves

TENSORBOARD = "tensorboard"
"""The folder of TensorBoard event files, in the step's scratch folder while it trains and in its outputs after."""


class MetricsLog:
    def __init__(self, path: Path, resume_step: int, event: Callable[[dict[str, Any]], None], enabled: bool = True,
                 tensorboard: bool = False):
        self.path = path
        self.event = event
        self.enabled = enabled
        """False in all but the main process of a distributed run: one writer per file."""
        self.records = [r for r in _read(path) if r["step"] <= resume_step]  # a killed run wrote past its checkpoint
        self._rewrite()
        self._board = _tensorboard_writer(path.parent / TENSORBOARD, resume_step) if tensorboard and enabled else None

    def truncate(self, step: int) -> None:
        """Forget records past `step` (after rolling back to the checkpoint of that step)."""
        self.records = [r for r in self.records if r["step"] <= step]
        self._rewrite()
        if self._board is not None:  # a writer that purges the events past `step`, as the lines were dropped
            self._board.close()
            self._board = _tensorboard_writer(self.path.parent / TENSORBOARD, step)

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.event({"event": "metrics", "metrics": record})  # nested: the run log's "step" is the recipe step
        if self._board is not None:
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)):
                    self._board.add_scalar(name, value, record["step"])
            self._board.flush()  # a record every log_every steps: cheap, and TensorBoard shows it at once

    def _rewrite(self) -> None:
        """The file as the records say, replaced atomically: a kill mid-write must not lose the earlier lines."""
        if not self.enabled:
            return
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text("".join(json.dumps(r) + "\n" for r in self.records), encoding="utf-8")
        os.replace(partial, self.path)


def write_training_outputs(records: list[dict[str, Any]], scratch_dir: Path, out_dir: Path, title: str) -> None:
    """metrics.jsonl, loss.png and, when the step kept them, the TensorBoard events, into the step's outputs."""
    (out_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    training_curves(records, out_dir / "loss.png", title)
    if (scratch_dir / TENSORBOARD).is_dir():
        shutil.copytree(scratch_dir / TENSORBOARD, out_dir / TENSORBOARD, dirs_exist_ok=True)


def _tensorboard_writer(folder: Path, resume_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise StepError("tensorboard = true needs the tensorboard package: pip install tensorboard") from None
    # Events past the checkpoint (written before a kill, or before a rollback) are dropped, as the JSONL lines are;
    # from step 0 too: a run killed before its first checkpoint starts again from the beginning.
    return SummaryWriter(str(folder), purge_step=resume_step + 1)


def _read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed run may be cut short
            break
    return records
