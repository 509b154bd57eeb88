"""The serving log: every completion and every piece of feedback, one JSON object a line.

Each line has `id`, `kind` (`completion` or `feedback`) and `text`, so a recipe reads the log as a data
source for the next fine-tune:

    sources = [{ path = "serve-log.jsonl", text_field = "text", id_field = "id", metadata = ["kind", "rating"] }]

A completion's text is its prompt and output; a feedback line's text is the prompt and the correction
(or the rated output when no correction was given).
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

REMEMBERED = 100_000
"""Completions remembered for feedback; older ids are forgotten (their log lines stay)."""


class ServeLog:
    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()  # one writer at a time; held only around a single short write
        self._completions: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._feedback_count = 0

    def completion(self, completion_id: str, model: str, prompt: str, output: str, finish_reason: str,
                   messages: list[dict] | None = None) -> None:
        record = {"id": completion_id, "kind": "completion", "created": int(time.time()), "model": model,
                  "prompt": prompt, "completion": output, "finish_reason": finish_reason, "text": prompt + output}
        if messages is not None:
            record["messages"] = messages
        with self._lock:
            self._completions[completion_id] = {"prompt": prompt, "completion": output}
            if len(self._completions) > REMEMBERED:
                self._completions.popitem(last=False)
        self._append(record)

    def knows(self, completion_id: str) -> bool:
        return completion_id in self._completions

    def feedback(self, completion_id: str, rating: int | None, correction: str | None, comment: str | None) -> str:
        seen = self._completions[completion_id]
        with self._lock:
            self._feedback_count += 1
            feedback_id = f"{completion_id}/feedback-{self._feedback_count}"
        text = seen["prompt"] + (correction if correction is not None else seen["completion"])
        self._append({"id": feedback_id, "kind": "feedback", "created": int(time.time()), "completion_id": completion_id,
                      "rating": rating, "correction": correction, "comment": comment, "text": text})
        return feedback_id

    def _append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as log:
            log.write(line)
