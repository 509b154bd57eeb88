"""What state each step of a plan is in, read from the store without running anything."""

from __future__ import annotations

from typing import Any

from llmrecipe.plan.plan import Plan
from llmrecipe.run.store import Store


def step_states(plan: Plan, store: Store) -> dict[str, str]:
    """Per step: `cached` (output in the store; skipped), `stale` (ran before with other settings or inputs;
    runs again) or `ready` (never ran with these settings; runs)."""
    previous = store.last_fingerprints(plan.name)
    states = {}
    for step in plan.steps:
        if store.is_done(step.fingerprint):
            states[step.name] = "cached"
        elif step.name in previous:
            states[step.name] = "stale"
        else:
            states[step.name] = "ready"
    return states


def step_status(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """Per step: state, artifact folder, and for finished steps their timing, run and metrics."""
    states = step_states(plan, store)
    rows = []
    for step in plan.steps:
        row: dict[str, Any] = {"step": step.name, "kind": step.kind, "state": states[step.name], "fingerprint": step.fingerprint}
        manifest = store.manifest(step.fingerprint)
        if manifest is not None:
            row.update(
                artifact=str(store.path(step.fingerprint)),
                seconds=manifest["seconds"],
                finished_by_run=manifest["run_id"],
                metrics={k: v for k, v in manifest["metrics"].items() if not isinstance(v, (list, dict))},
            )
        rows.append(row)
    return rows
