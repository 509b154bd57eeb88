"""Read a suite's JSONL file, checking each line has the keys the suite needs. No numpy or torch here: `validate`
reads a sample of each suite's file with these same checks, so a mistake has one message at plan and run time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmrecipe.errors import StepError
from llmrecipe.jsonl import json_objects


MULTIPLE_CHOICE_KEYS = {"context": str, "choices": list, "answer": int}
"""A multiple-choice row: the context, its options, the 0-based index of the right one."""


def suite_key(step: str, suite: str) -> str:
    """Where a suite's settings are in the recipe, for messages."""
    return f"steps.{step}.suites.{suite}"


def required_keys(suite: Any, key: str) -> tuple[dict[str, type | tuple[type, ...]], str]:
    """The keys (and types) every row of a JSONL suite's file needs, and the fix when one is missing."""
    if suite.type == "multiple_choice":
        return MULTIPLE_CHOICE_KEYS, "a multiple_choice file has 'context', 'choices' (a list) and 'answer' (an index)"
    return ({suite.prompt_field: str, suite.reference_field: str},
            f"set {key}.prompt_field / {key}.reference_field to the keys the file uses")


def read_jsonl(path: Path, required: dict[str, type | tuple[type, ...]], fix: str = "",
               limit: int | None = None) -> list[dict[str, Any]]:
    """The first `limit` rows (all when None); a missing key or a wrong type names the line and the `fix`."""
    rows = []
    for number, row in json_objects(path):
        if limit is not None and len(rows) >= limit:
            break
        for key, kind in required.items():
            if not isinstance(row.get(key), kind):
                raise StepError(f"{path.name} line {number}: needs key '{key}' of type {_names(kind)}; found keys "
                                f"{sorted(row)}" + (f"; {fix}" if fix else ""))
        rows.append(row)
    if not rows:
        raise StepError(f"{path.name} has no rows: the file is empty (or only blank lines); give it one JSON object "
                        "per line")
    return rows


def check_choices(rows: list[dict], file_name: str) -> None:
    """Every multiple-choice row has at least two string options and an answer that indexes them."""
    for number, row in enumerate(rows, start=1):
        choices = row["choices"]
        if len(choices) < 2 or not all(isinstance(c, str) for c in choices):
            raise StepError(f"{file_name} example {number}: `choices` must be a list of at least two strings")
        if not 0 <= row["answer"] < len(choices):
            raise StepError(
                f"{file_name} example {number}: answer {row['answer']} is not an index into its "
                f"{len(choices)} choices (answers are 0-based)"
            )


def _names(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)
