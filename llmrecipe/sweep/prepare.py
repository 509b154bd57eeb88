"""A sweep before any trial runs: its recipe loaded, every trial's recipe validated and planned, the metric
checked. Everything a user can get wrong is found here and reported as a RecipeError naming the TOML path."""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmrecipe import api
from llmrecipe.errors import RecipeError
from llmrecipe.plan.fingerprint import canonical_json
from llmrecipe.plan.plan import Plan
from llmrecipe.recipe.load import LoadedRecipe
from llmrecipe.recipe.sweep import PairedAxis, SweepConfig
from llmrecipe.sweep.metrics import check_metric, model_step
from llmrecipe.sweep.sizes import expand_sizes
from llmrecipe.sweep.space import Trial
from llmrecipe.sweep.toml import toml_value

TRIAL_NAME_PREFIX = 80
"""Characters of the recipe's run name kept in a trial's run name (a run name is at most 100)."""


@dataclass(frozen=True)
class SweepSetup:
    loaded: LoadedRecipe
    """The recipe with the user's `--set` overrides, as every trial starts from it."""
    overrides: list[str]
    workdir: Path
    sweep_id: str
    """Names the sweep's folder under runs/; the same recipe and overrides give the same id, so a second
    `llmrecipe sweep` of the same command finds the first one's trials and resumes."""
    metric_step: str
    metric_name: str
    model_step: str | None
    """The training step whose model the metric measures (its curves and size go in the report)."""
    sweep: SweepConfig
    """The recipe's [sweep], its size ladders written out as the values they set."""
    metric: str
    """`steps.<step>.<name>`: the sweep's metric, or the metric of a `--smallest` target."""
    goal: str

    @property
    def seed(self) -> int:
        return self.sweep.seed if self.sweep.seed is not None else self.loaded.recipe.run.seed

    @property
    def folder(self) -> Path:
        return self.workdir / "runs" / self.sweep_id



@dataclass(frozen=True)
class PlannedTrial:
    trial: Trial
    name: str
    """The trial's run name (its own recipe lock and run record)."""
    overrides: list[str]
    """The `--set` overrides that make the recipe this trial: the user's, the trial's values, its run name."""
    plan: Plan
    facts: dict[str, Any] = field(default_factory=dict)
    """What the plan knows before training: parameters, training FLOPs and tokens, every step's fingerprint."""

    @property
    def index(self) -> int:
        return self.trial.index


def prepare(recipe: str | Path, overrides: list[str], workdir: str | Path | None = None,
            search: tuple[str, str, str] | None = None) -> SweepSetup:
    """`search`: (metric, goal, what) of a search over the sweep's trials that is not the sweep itself (`--smallest`):
    its metric replaces the sweep's, and `what` keeps its folder apart from the sweep's."""
    loaded = api.load(recipe, overrides)
    sweep = loaded.recipe.sweep
    if sweep is None:
        raise RecipeError(f"{loaded.path.name}: no [sweep] table; add one with a metric and a [sweep.space] of values "
                          "to vary (see the README's Sweeps section)")
    _check_installed(sweep)
    folder = api.workdir_of(loaded, workdir)
    digest = hashlib.sha256(canonical_json(loaded.recipe.model_dump(mode="json", by_alias=True)).encode()).hexdigest()
    sweep_id = f"sweep-{loaded.recipe.run.name[:TRIAL_NAME_PREFIX]}-{digest[:10]}".replace(" ", "_")
    metric, goal = (search[0], search[1]) if search else (sweep.metric, sweep.goal)
    if search:
        sweep_id += "-" + hashlib.sha256(search[2].encode()).hexdigest()[:8]
    base = api.compile(loaded, folder)
    step, name = check_metric(base, metric, "--smallest" if search else "sweep.metric")
    trained = model_step(base, step)
    return SweepSetup(loaded, list(overrides), folder, sweep_id, step, name, trained.name if trained else None,
                      expand_sizes(loaded.recipe), metric, goal)


def _check_installed(sweep: SweepConfig) -> None:
    if sweep.method == "tpe" and importlib.util.find_spec("optuna") is None:
        raise RecipeError("sweep.method = \"tpe\": needs Optuna; pip install 'llmrecipe[sweep]', or use \"random\"")
    if sweep.early_stop != "none" and importlib.util.find_spec("optuna") is None:
        raise RecipeError(f"sweep.early_stop = \"{sweep.early_stop}\": needs Optuna's pruners; pip install "
                          "'llmrecipe[sweep]', or set early_stop = \"none\"")
    if sweep.engine == "ray" and importlib.util.find_spec("ray") is None:
        raise RecipeError("sweep.engine = \"ray\": needs Ray; pip install 'llmrecipe[ray]', or use \"local\"")


def trial_name(setup: SweepSetup, index: int) -> str:
    return f"{setup.loaded.recipe.run.name[:TRIAL_NAME_PREFIX]}-trial{index}"


def plan_trial(setup: SweepSetup, trial: Trial) -> PlannedTrial:
    """The trial's recipe (the sweep's, with the trial's values set), validated and planned; a value the recipe
    rejects is a RecipeError that names the sweep.space key that set it."""
    name = trial_name(setup, trial.index)
    overrides = [*setup.overrides, *(f"{key}={toml_value(value)}" for key, value in trial.values.items()),
                 f"run.name={toml_value(name)}"]
    try:
        loaded = api.load(setup.loaded.path, overrides)
        plan = api.compile(loaded, setup.workdir)
    except RecipeError as error:
        raise RecipeError([_blame(setup.sweep, trial, problem) for problem in error.problems]) from None
    return PlannedTrial(trial, name, overrides, plan, plan_facts(plan, setup.metric_step))


def _blame(sweep: SweepConfig, trial: Trial, problem: str) -> str:
    """A trial's recipe error, said as the sweep.space key whose value caused it."""
    owner = {key: key for key in sweep.space}
    owner.update({other: key for key, axis in sweep.space.items() if isinstance(axis, PairedAxis) for other in axis.with_})
    culprits = [key for key in sorted(trial.values, key=len, reverse=True) if _mentions(problem, key)]
    if not culprits:
        shown = ", ".join(f"{k} = {toml_value(v)}" for k, v in trial.values.items())
        return f"sweep.space: trial {trial.index} ({shown}) makes a recipe that is rejected: {problem}"
    key = culprits[0]
    return (f'sweep.space."{owner.get(key, key)}": trial {trial.index} sets {key} = {toml_value(trial.values[key])}, '
            f"which the recipe rejects: {problem}")


def _mentions(problem: str, key: str) -> bool:
    """The problem names the key: whole (`steps.base.model.n_head`), or as the plan says it (`steps.base: ...
    model.n_head = 3`)."""
    if key in problem:
        return True
    parts = key.split(".")
    return len(parts) > 2 and parts[0] == "steps" and f"steps.{parts[1]}" in problem and \
        f"{'.'.join(parts[2:])} = " in problem


def plan_facts(plan: Plan, metric_step: str) -> dict[str, Any]:
    """Parameters, training FLOPs and tokens of the model the metric measures, and every step's fingerprint."""
    trained = model_step(plan, metric_step)
    derived = trained.derived if trained is not None else {}
    flops = derived.get("train_flops")
    return {
        "params": derived.get("n_params"),
        "train_flops": flops if isinstance(flops, int) else None,
        "train_tokens": _train_tokens(trained.spec) if trained is not None else None,
        "fingerprints": {step.name: step.fingerprint for step in plan.steps},
    }


def _train_tokens(spec: dict[str, Any]) -> int | None:
    steps, per_step = spec.get("total_steps"), spec.get("tokens_per_step")
    return steps * per_step if isinstance(steps, int) and isinstance(per_step, int) else None
