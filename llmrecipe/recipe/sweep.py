"""The `[sweep]` table: which recipe values to vary, how to pick them, and what to optimise.

`llmrecipe run` ignores it; `llmrecipe sweep` runs one trial per choice of values, each trial being the recipe with
those values set (as `--set` would), planned and run as usual.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, StrictBool, StrictFloat, StrictInt, StrictStr, Tag, model_validator

from llmrecipe.recipe.base import MAX_PROCESSES, Section

Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr]
"""A value a trial sets: a number, a string or a boolean."""

MAX_TRIALS = 100_000
"""Trials of one sweep: far more than any sweep trains, so it refuses only slips (an extra 000) before the trials
are planned one by one."""


class PairedAxis(Section):
    """Values that move together: trial i sets `values[i]` and, for each key of `with`, that key's i-th value."""

    values: list[Scalar] = Field(min_length=1)
    with_: dict[str, list[Scalar]] = Field(alias="with", min_length=1)
    """Other recipe keys and their lists, as long as `values`."""


class LogUniformAxis(Section):
    """A number drawn uniformly on a log scale between two positive bounds (random and tpe only)."""

    log_uniform: list[float] = Field(min_length=2, max_length=2)


class UniformAxis(Section):
    """A number drawn uniformly between two bounds (random and tpe only)."""

    uniform: list[float] = Field(min_length=2, max_length=2)


class SizeAxis(Section):
    """A ladder of model sizes: each value s sets the model's `n_layer`, `n_head` and `d_model` to s times the
    recipe's, so depth and width grow together and the head size stays (the key names a pretrain step's `model`)."""

    size: list[Annotated[int, Field(ge=1, le=1024)]] = Field(min_length=1)


def _axis_kind(value: Any) -> str | None:
    """Which form an axis has, from TOML input or (when serialising) from the validated axis."""
    forms = {PairedAxis: "values", LogUniformAxis: "log_uniform", UniformAxis: "uniform", SizeAxis: "size"}
    if type(value) in forms:
        return forms[type(value)]
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        for key in ("values", "log_uniform", "uniform", "size"):
            if key in value:
                return key
    return None


Axis = Annotated[
    Union[
        Annotated[list[Scalar], Tag("list")],
        Annotated[PairedAxis, Tag("values")],
        Annotated[LogUniformAxis, Tag("log_uniform")],
        Annotated[UniformAxis, Tag("uniform")],
        Annotated[SizeAxis, Tag("size")],
    ],
    Discriminator(
        _axis_kind,
        custom_error_type="axis",
        custom_error_message="expected a list of values, { values = [...], with = { ... } }, { log_uniform = [low, "
                             "high] }, { uniform = [low, high] } or { size = [1, 2, ...] }",
    ),
]
"""One key of `[sweep.space]`: listed values, a paired list, a range to draw from, or a ladder of model sizes."""


class SweepConfig(Section):
    """A search over recipe values: `llmrecipe sweep recipe.toml` runs the trials and writes a report."""

    method: Literal["grid", "random", "tpe"] = "grid"
    """`grid`: every combination of the listed values; `random`: `samples` draws; `tpe`: `samples` trials proposed
    one batch at a time by Optuna's TPE sampler from the results so far (`pip install 'llmrecipe[sweep]'`)."""
    samples: int | None = Field(default=None, ge=1, le=MAX_TRIALS)
    """Trials of a random or tpe sweep."""
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)
    """Seed of the random and tpe draws: the same seed gives the same trials. Unset: `run.seed`."""
    metric: str = Field(pattern=r"^steps\.[a-z][a-z0-9_-]*\.[A-Za-z0-9_]+$")
    """`steps.<step>.<metric>`: a metric that step reports, e.g. `steps.base.best_val_loss` or
    `steps.eval.perplexity_loss` (an evaluate step reports `<suite>_<metric>`)."""
    goal: Literal["min", "max"] = "min"
    parallel: int = Field(default=1, ge=1, le=MAX_PROCESSES)
    """Trials running at once (processes on this machine, or tasks on a Ray cluster)."""
    engine: Literal["local", "ray"] = "local"
    """`local`: trials are processes on this machine; `ray`: Ray tasks on a cluster, each asking for the CPUs and GPUs
    its plan needs. With `ray` the workdir must be on a file system every node sees. Not part of any result."""
    address: str | None = None
    """With engine = "ray": the cluster to join (`auto`, `ray://host:10001`); unset uses RAY_ADDRESS, else starts a
    Ray instance on this machine."""
    early_stop: Literal["none", "median", "halving"] = "none"
    """Stop trials whose validation loss falls clearly behind, as Optuna's pruners judge it from the loss each
    trial's training reports at its validations: `median` (behind the median of earlier trials at the same step,
    once two have finished) or `halving` (successive halving). A stopped trial is recorded as `pruned`. Local
    engine only; which trials are stopped can depend on timing when trials run in parallel."""
    space: dict[str, Axis] = Field(min_length=1)
    """Recipe key (dotted, as for `--set`) -> its values. Lists are crossed in a grid; a paired list moves several
    keys together; `log_uniform` and `uniform` ranges are for random and tpe; `"steps.NAME.model" = { size = [1, 2,
    3] }` scales a model's depth and width together."""

    @model_validator(mode="after")
    def _method_fits_space(self) -> "SweepConfig":
        problems = []
        for key, axis in self.space.items():
            if isinstance(axis, PairedAxis):
                problems += [f'space."{key}".with."{other}": {len(values)} values but `values` has '
                             f"{len(axis.values)}; paired lists move together, so give them equal lengths"
                             for other, values in axis.with_.items() if len(values) != len(axis.values)]
            if isinstance(axis, (LogUniformAxis, UniformAxis)):
                low, high = axis.log_uniform if isinstance(axis, LogUniformAxis) else axis.uniform
                form = "log_uniform" if isinstance(axis, LogUniformAxis) else "uniform"
                if self.method == "grid":
                    problems.append(f'space."{key}" = {{ {form} = [{low}, {high}] }}: a grid needs listed values; '
                                    'give a list, or set method = "random" or "tpe"')
                if not low < high or (form == "log_uniform" and low <= 0):
                    problems.append(f'space."{key}".{form} = [{low}, {high}]: give [low, high] with low < high'
                                    + (" and low > 0" if form == "log_uniform" else ""))
        if self.early_stop != "none" and self.engine == "ray":
            problems.append('early_stop: trials are stopped by watching their validation from this machine, which the '
                            'ray engine does not allow; set early_stop = "none" or engine = "local"')
        if self.method == "grid" and self.samples is not None:
            problems.append('samples: a grid runs every combination; drop `samples` or set method = "random" or "tpe"')
        if self.method != "grid" and self.samples is None:
            problems.append(f'samples: a {self.method} sweep needs the number of trials, e.g. samples = 20')
        if problems:
            raise ValueError("; ".join(problems))
        return self
