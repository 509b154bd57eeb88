"""What an executor gets besides its spec: where its inputs are, where to write, how to report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from llmrecipe.plan.plan import ExternalFile


class Progress(Protocol):
    """A progress display for one loop. `fields` are shown beside the bar (loss, tokens/s, ...)."""

    def advance(self, n: int = 1, **fields: Any) -> None: ...

    def close(self) -> None: ...


class Reporter(Protocol):
    """How the scheduler and executors talk to the person running the recipe."""

    def step_started(self, name: str, kind: str, resumed: bool) -> None: ...

    def step_cached(self, name: str, kind: str) -> None: ...

    def step_done(self, name: str, kind: str, seconds: float, metrics: dict[str, Any]) -> None: ...

    def step_failed(self, name: str, kind: str, message: str) -> None: ...

    def log(self, name: str, message: str) -> None: ...

    def progress(self, name: str, total: int, unit: str, completed: int = 0) -> Progress: ...


@dataclass
class StepContext:
    """Everything an executor may touch. It never sees the recipe, the plan or other steps' specs."""

    name: str
    inputs: dict[str, Path]
    """Role (`data`, `tokenizer`, `tokens`, `model`) -> the committed artifact folder of the upstream step."""
    out_dir: Path
    """Empty folder for this step's outputs; committed to the store when the executor returns."""
    scratch_dir: Path
    """Survives a crash: checkpoints and resume state live here until the step is committed."""
    device: str
    reporter: Reporter
    external: list[ExternalFile] = field(default_factory=list)
    """Files from outside the store that this step reads, with their digests."""
    event: Callable[[dict[str, Any]], None] = lambda record: None
    """Append a record (a metrics line, a warning) to the run's event log."""
    downloads_dir: Path | None = None
    """`<workdir>/downloads`: files fetched from URLs, named by their pinned sha256 and shared by every run."""

    def log(self, message: str) -> None:
        self.reporter.log(self.name, message)

    def progress(self, total: int, unit: str, completed: int = 0) -> Progress:
        return self.reporter.progress(self.name, total, unit, completed)
