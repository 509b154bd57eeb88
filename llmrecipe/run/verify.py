"""`llmrecipe verify`: re-hash store entries against their manifests and name every file that drifted."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from llmrecipe.plan.plan import Plan
from llmrecipe.run.store import MANIFEST, Store


@dataclass
class Verification:
    entries: int = 0
    files: int = 0
    bytes: int = 0
    drifted: list[str] = field(default_factory=list)
    """One line per drifted file: its path in the store, the step, and what differs."""
    not_stored: list[str] = field(default_factory=list)
    """Steps of the plan with nothing in the store yet (not an error: they have not run)."""
    unverifiable: list[str] = field(default_factory=list)
    """Entries whose manifest lists no files (committed before manifests did): nothing to compare with."""

    @property
    def ok(self) -> bool:
        return not self.drifted


def verify_plan(plan: Plan) -> Verification:
    """Every store entry of the plan's steps."""
    store = Store(Path(plan.workdir))
    result = Verification()
    for step in plan.steps:
        if (store.path(step.fingerprint) / MANIFEST).exists() or store.path(step.fingerprint).is_dir():
            _verify_entry(store, step.fingerprint, step.name, result)
        else:
            result.not_stored.append(step.name)
    return result


def verify_store(workdir: Path) -> Verification:
    """Every entry in the workdir's store, whichever recipe made it."""
    store = Store(workdir)
    result = Verification()
    for fingerprint in store.fingerprints():
        _verify_entry(store, fingerprint, None, result)
    return result


def _verify_entry(store: Store, fingerprint: str, step: str | None, result: Verification) -> None:
    folder = store.path(fingerprint)
    checked = store.check(fingerprint, full=True)
    result.entries += 1
    name = step or (checked.manifest or {}).get("step") or "?"
    if checked.state == "missing":
        result.drifted.append(f"{folder}: no {MANIFEST} (an incomplete entry; `llmrecipe run` computes it again)")
        return
    files = (checked.manifest or {}).get("files")
    if checked.ok and files is None:
        result.unverifiable.append(f"{folder} (step {name})")
        return
    for listed in (files or {}).values():
        result.files += 1
        result.bytes += listed.get("size", 0)
    result.drifted += [f"{folder / drift.path} (step {name}): {drift.problem}" for drift in checked.drifts]
