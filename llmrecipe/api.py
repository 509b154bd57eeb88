"""The Python API, and the one place that chains load -> compile -> schedule.

    from llmrecipe import api
    loaded = api.load("recipes/quickstart.toml", ["steps.base.optim.lr=3e-4"])
    plan = api.compile(loaded)
    report = api.run(loaded)
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

from llmrecipe.checkpoints.locate import import_checkpoints
from llmrecipe.data.locate import external_files
from llmrecipe.errors import RecipeError
from llmrecipe.evals.locate import evaluate_files
from llmrecipe.finetune.locate import finetune_files
from llmrecipe.host import probe_host, torchrun_world
from llmrecipe.plan.compile import compile_plan
from llmrecipe.plan.plan import Plan
from llmrecipe.preflight import check_data_samples
from llmrecipe.recipe.explain import did_you_mean
from llmrecipe.recipe.load import LoadedRecipe, load_recipe
from llmrecipe.run.context import Reporter
from llmrecipe.run.reporter import LineReporter
from llmrecipe.run.scheduler import RunReport
from llmrecipe.run.session import run_recipe
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
    """The recipe's plan; before it, a sample of every data file the recipe names is checked (llmrecipe/preflight.py)."""
    checkpoints, checkpoint_files = import_checkpoints(loaded.recipe, loaded.base_dir)
    external = {**external_files(loaded.recipe, loaded.base_dir), **evaluate_files(loaded.recipe, loaded.base_dir),
                **finetune_files(loaded.recipe, loaded.base_dir), **checkpoint_files}
    plan = compile_plan(loaded.recipe, workdir=str(workdir_of(loaded, workdir)), host=probe_host(), external=external,
                        executor_versions=EXECUTOR_VERSIONS, checkpoints=checkpoints)
    check_data_samples(loaded.recipe, external)
    return plan


def artifact(plan: Plan, step: str) -> Path:
    """The store folder that holds (or will hold) a step's outputs."""
    return Store(Path(plan.workdir)).path(plan.step(step).fingerprint)


MODEL_KINDS = ("pretrain", "import", "finetune", "export")
"""Step kinds whose artifact holds a model that `generate` and `serve` can run."""


def model_folder(
    target: str | Path, step: str | None = None, overrides: Iterable[str] = (), workdir: str | Path | None = None
) -> Path:
    """`RECIPE STEP` (the step's artifact in the store) or a folder path -> the folder holding a model."""
    target = Path(target)
    if target.is_dir():
        if step is not None:
            raise RecipeError(f"{target} is a folder, not a recipe: give either RECIPE STEP or an artifact FOLDER")
        return target
    if target.suffix != ".toml":
        raise RecipeError(f"{target}: neither a recipe (.toml) nor an artifact folder")
    plan = compile(load(target, overrides), workdir)
    if step is None:
        names = [s.name for s in plan.steps if s.kind in MODEL_KINDS]
        raise RecipeError(f"{target}: name the step whose model to use, one of {names}")
    _check_step_names(plan, {step}, "STEP")
    kind = plan.step(step).kind
    if kind not in MODEL_KINDS:
        raise RecipeError(f"STEP {step}: a {kind} step holds no model; name a {' or '.join(MODEL_KINDS)} step")
    if states(plan)[step] != "cached":
        raise RecipeError(f"STEP {step} has not run with these settings yet: `llmrecipe run {target} --only {step}`")
    return artifact(plan, step)


def open_model(folder: str | Path, backend: str = "auto", threads: int | None = None):
    """A model folder -> a `generate.artifact.LoadedModel` (an engine, its tokenizer and chat template)."""
    from llmrecipe.generate.artifact import load_model

    return load_model(Path(folder), backend, threads)


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
    wait: bool = False,
    verify: bool = False,
) -> RunReport | None:
    """Run the recipe; steps already in the store are skipped, an interrupted step resumes.

    `plan` is the recipe's compiled plan when the caller already has it (e.g. to show it first). Under torchrun,
    rank 0 runs the recipe and the other ranks train along in its training steps; they return None. `wait`: wait
    for a run of the same recipe in the same workdir to end instead of refusing; `verify`: re-hash every stored
    output before using it.
    """
    plan = plan or compile(loaded, workdir)
    only, force = set(only), set(force)
    _check_step_names(plan, only, "--only")
    _check_step_names(plan, force, "--force")
    from llmrecipe.steps.processes import process_executors

    with process_executors(EXECUTORS, plan.device) as executors:
        if executors is None:  # a torchrun rank other than 0: it has trained along in rank 0's training steps
            return None
        return _run_here(loaded, plan, only, force, reporter, executors, wait=wait, verify=verify)


def is_follower() -> bool:
    """This process is a rank other than 0 of a torchrun launch: it trains along and reports nothing."""
    return torchrun_world()[0] != 0


def _run_here(loaded: LoadedRecipe, plan: Plan, only: set[str], force: set[str], reporter: Reporter | None,
              executors: Mapping[str, Any], wait: bool = False, verify: bool = False) -> RunReport:
    return run_recipe(loaded, plan, executors, reporter or LineReporter(sys.stderr), only=only or None, force=force,
                      wait=wait, verify=verify)


def latest_report(plan: Plan) -> Path | None:
    """report.md of the newest run record of this recipe (by its run name), if any run wrote one."""
    from llmrecipe.run.record import latest_runs

    for record in latest_runs(Path(plan.workdir)):
        if record.name.split("-", 2)[-1].rsplit("-", 1)[0] == plan.name and (record / "report.md").is_file():
            return record / "report.md"
    return None


def compare(
    run_a: str, run_b: str, *, workdir: str | Path | None = None, step: str | None = None, resamples: int = 1000
) -> dict[str, Any]:
    """Paired bootstrap comparison of two evaluations: each side is a run record, a run id or an evaluate artifact.
    `same_artifact` says when both sides are one folder (two runs that reused the same cached evaluation)."""
    from llmrecipe.compare import compare_folders, evaluation_folder

    root = Path(workdir or DEFAULT_WORKDIR).resolve()
    a, b = evaluation_folder(run_a, root, step), evaluation_folder(run_b, root, step)
    return {"a": str(a), "b": str(b), "same_artifact": a.resolve() == b.resolve(), "rows": compare_folders(a, b, resamples)}


def _check_step_names(plan: Plan, names: set[str], flag: str) -> None:
    known = [s.name for s in plan.steps]
    unknown = [f"{flag} {name}: no step of that name; {did_you_mean(name, known)}" for name in sorted(names) if name not in known]
    if unknown:
        raise RecipeError(unknown)
