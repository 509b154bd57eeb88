"""The Python API, and the one place that chains load -> compile -> schedule.

    from llmrecipe import api
    loaded = api.load("recipes/quickstart.toml", ["steps.base.optim.lr=3e-4"])
    plan = api.compile(loaded)
    report = api.run(loaded)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable

from llmrecipe.data.locate import external_files
from llmrecipe.errors import RecipeError
from llmrecipe.host import probe_host
from llmrecipe.plan.compile import compile_plan
from llmrecipe.plan.plan import Plan
from llmrecipe.recipe.explain import did_you_mean
from llmrecipe.recipe.load import LoadedRecipe, load_recipe
from llmrecipe.run.context import Reporter
from llmrecipe.run.record import RunRecord, WorkdirLock, environment
from llmrecipe.run.report import render_report
from llmrecipe.run.reporter import LineReporter
from llmrecipe.run.scheduler import RunReport, Scheduler
from llmrecipe.run.status import step_states, step_status
from llmrecipe.run.store import Store
from llmrecipe.steps import EXECUTOR_VERSIONS, EXECUTORS

DEFAULT_WORKDIR = ".llmrecipe"


def load(path: str | Path, overrides: Iterable[str] = ()) -> LoadedRecipe:
    return load_recipe(path, list(overrides))


def workdir_of(loaded: LoadedRecipe, override: str | Path | None = None) -> Path:
    """--workdir (relative to the current folder) > [run] workdir (relative to the recipe) > ./.llmrecipe."""
    if override is not None:
        return Path(override).resolve()
    if loaded.recipe.run.workdir is not None:
        return (loaded.base_dir / loaded.recipe.run.workdir).resolve()
    return Path(DEFAULT_WORKDIR).resolve()


def compile(loaded: LoadedRecipe, workdir: str | Path | None = None) -> Plan:
    return compile_plan(
        loaded.recipe,
        workdir=str(workdir_of(loaded, workdir)),
        host=probe_host(),
        external=external_files(loaded.recipe, loaded.base_dir),
        executor_versions=EXECUTOR_VERSIONS,
    )


def artifact(plan: Plan, step: str) -> Path:
    """The store folder that holds (or will hold) a step's outputs."""
    return Store(Path(plan.workdir)).path(plan.step(step).fingerprint)


def states(plan: Plan) -> dict[str, str]:
    return step_states(plan, Store(Path(plan.workdir)))


def status(plan: Plan) -> list[dict[str, Any]]:
    return step_status(plan, Store(Path(plan.workdir)))


def run(
    loaded: LoadedRecipe,
    *,
    plan: Plan | None = None,
    workdir: str | Path | None = None,
    only: Iterable[str] = (),
    force: Iterable[str] = (),
    reporter: Reporter | None = None,
) -> RunReport:
    """Run the recipe; steps already in the store are skipped, an interrupted step resumes.

    `plan` is the recipe's compiled plan when the caller already has it (e.g. to show it first).
    """
    plan = plan or compile(loaded, workdir)
    only, force = set(only), set(force)
    _check_step_names(plan, only, "--only")
    _check_step_names(plan, force, "--force")
    workdir_path = Path(plan.workdir)
    reporter = reporter or LineReporter(sys.stderr)
    with WorkdirLock(workdir_path):
        record = RunRecord(workdir_path, plan.name)
        record.write_text("recipe.toml", loaded.path.read_text(encoding="utf-8"))
        record.write_json("recipe.json", loaded.recipe.model_dump(mode="json"))
        record.write_json("plan.json", plan.model_dump(mode="json"))
        record.write_json("environment.json", environment(plan.device))
        scheduler = Scheduler(Store(workdir_path), EXECUTORS, reporter)
        failure = None
        try:
            return scheduler.run(plan, record, only=only or None, force=force)
        except BaseException as error:  # KeyboardInterrupt too: the report says where the run stopped
            failure = str(error) or type(error).__name__
            raise
        finally:
            record.write_text("report.md", render_report(plan, scheduler.outcomes, record.run_id, failure))
            record.write_json("status.json", step_status(plan, Store(workdir_path)))
            record.close()


def _check_step_names(plan: Plan, names: set[str], flag: str) -> None:
    known = [s.name for s in plan.steps]
    unknown = [f"{flag} {name}: no step of that name; {did_you_mean(name, known)}" for name in sorted(names) if name not in known]
    if unknown:
        raise RecipeError(unknown)
