"""A Reporter that writes plain, timestamped log lines: for logs, CI and pipes (no terminal tricks)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO


def format_fields(fields: dict[str, Any]) -> str:
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        parts.append(f"{key}={value}")
    return " ".join(parts)


def format_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class LineProgress:
    """Prints a line at most every `interval` seconds, and always at the end, with rate and ETA."""

    def __init__(self, out: TextIO, name: str, total: int, unit: str, completed: int, interval: float = 10.0):
        self.out, self.name, self.total, self.unit = out, name, total, unit
        self.completed = self._start = completed
        self.interval = interval
        self.t0 = self._last = time.monotonic()
        self.fields: dict[str, Any] = {}

    def advance(self, n: int = 1, **fields: Any) -> None:
        self.completed += n
        self.fields.update(fields)
        now = time.monotonic()
        if now - self._last >= self.interval or self.completed >= self.total:
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        done = self.completed - self._start
        elapsed = now - self.t0
        eta = (self.total - self.completed) * elapsed / done if done else 0.0
        extra = format_fields(self.fields)
        print(
            f"[{self.name}] {self.completed}/{self.total} {self.unit} {extra} "
            f"elapsed {format_seconds(elapsed)} eta {format_seconds(eta)}",
            file=self.out,
            flush=True,
        )

    def close(self) -> None:
        pass


class LineReporter:
    def __init__(self, out: TextIO = sys.stderr, progress_interval: float = 10.0):
        self.out = out
        self.progress_interval = progress_interval

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def step_started(self, name: str, kind: str, resumed: bool) -> None:
        self._say(f"[{name}] {kind}: {'resuming from checkpoint' if resumed else 'running'}")

    def step_cached(self, name: str, kind: str) -> None:
        self._say(f"[{name}] {kind}: cached, skipping")

    def step_done(self, name: str, kind: str, seconds: float, metrics: dict[str, Any]) -> None:
        headline = {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))}
        self._say(f"[{name}] {kind}: done in {format_seconds(seconds)} {format_fields(headline)}".rstrip())

    def step_failed(self, name: str, kind: str, message: str) -> None:
        self._say(f"[{name}] {kind}: FAILED: {message}")

    def log(self, name: str, message: str) -> None:
        self._say(f"[{name}] {message}")

    def progress(self, name: str, total: int, unit: str, completed: int = 0) -> LineProgress:
        return LineProgress(self.out, name, total, unit, completed, self.progress_interval)
