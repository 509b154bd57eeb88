"""Content identity: sha256 of canonical JSON of what can change a step's result, and nothing else."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Key order, spacing and float spelling fixed, so equal content always gives equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def fingerprint(
    kind: str,
    executor_version: int,
    spec: dict[str, Any],
    input_fingerprints: dict[str, str],
    external: list[tuple[int, str, str]],
) -> str:
    """sha256 of {kind, executor version, resolved spec, input fingerprints, (source, name, sha256) of files}."""
    payload = {
        "kind": kind,
        "executor_version": executor_version,
        "spec": spec,
        "inputs": input_fingerprints,
        "external": sorted(external),
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
