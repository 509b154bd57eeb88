"""What state each step of a plan is in, read from the store without running anything (and without writing:
a read-only workdir answers too)."""

from __future__ import annotations

from typing import Any

from llmrecipe.plan.plan import Plan
from llmrecipe.run.store import EntryCheck, Store
from llmrecipe.training.saved import saved_step


def step_states(plan: Plan, store: Store) -> dict[str, str]:
    """Per step: `cached` (output in the store and intact; skipped), `corrupt` (output in the store that no longer
    matches its manifest; runs again), `partial (step N of M)` (a training step stopped after saving a checkpoint
    at step N; continues from there), `stale` (ran before with other settings or inputs; runs again) or `ready`
    (never ran with these settings; runs)."""
    return {name: state for name, (state, _) in _checked(plan, store).items()}


def step_status(plan: Plan, store: Store) -> list[dict[str, Any]]:
    """Per step: state, artifact folder, and for finished steps their timing, run and metrics; for a corrupt one
    what drifted, and for one that will run whether it resumes from saved state."""
    rows, checks = [], _checked(plan, store)
    for step in plan.steps:
        state, checked = checks[step.name]
        row: dict[str, Any] = {"step": step.name, "kind": step.kind, "state": state, "fingerprint": step.fingerprint}
        manifest = checked.manifest or {}
        if state == "cached":
            row.update(
                artifact=str(store.path(step.fingerprint)),
                seconds=manifest.get("seconds"),
                finished_by_run=manifest.get("run_id"),
                metrics={k: v for k, v in manifest.get("metrics", {}).items() if not isinstance(v, (list, dict))},
            )
        elif state == "corrupt":
            row["drifts"] = [str(d) for d in checked.drifts]
        else:
            scratch = store.scratch_root / step.fingerprint
            row["resumes"] = scratch.is_dir() and any(scratch.iterdir())
            if state.startswith("partial"):
                row["saved_step"] = saved_step(scratch)
        rows.append(row)
    return rows


def _checked(plan: Plan, store: Store) -> dict[str, tuple[str, EntryCheck]]:
    previous = store.last_fingerprints(plan.name)
    states = {}
    for step in plan.steps:
        checked = store.check(step.fingerprint)
        if checked.state != "missing":
            state = "cached" if checked.ok else "corrupt"
        elif (saved := saved_step(store.scratch_root / step.fingerprint)) is not None:
            total = step.spec.get("total_steps")
            state = f"partial (step {saved} of {total})" if total else f"partial (step {saved})"
        else:
            state = "stale" if step.name in previous else "ready"
        states[step.name] = (state, checked)
    return states
