"""The trials of a grid or random sweep: each a mapping of recipe keys to the values it sets.

Pure and seeded: the same `[sweep]` table gives the same trials, in the same order, on every machine.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from typing import Any

from llmrecipe.recipe.sweep import Axis, LogUniformAxis, PairedAxis, SweepConfig, UniformAxis


@dataclass(frozen=True)
class Trial:
    index: int
    values: dict[str, Any]
    """Recipe key (dotted) -> the value this trial sets; a paired axis sets all of its keys."""


def axis_choices(axis: Axis) -> list[dict[str, Any]]:
    """A listed axis as the settings it can make: one dict per choice (a paired axis's sets several keys)."""
    if isinstance(axis, PairedAxis):
        return [{"__axis__": axis.values[i], **{key: values[i] for key, values in axis.with_.items()}}
                for i in range(len(axis.values))]
    return [{"__axis__": value} for value in axis]


def _named(key: str, choice: dict[str, Any]) -> dict[str, Any]:
    """A choice of `axis_choices`, with the axis's own key in place of the marker."""
    return {(key if name == "__axis__" else name): value for name, value in choice.items()}


def grid_trials(space: dict[str, Axis]) -> list[Trial]:
    """Every combination of the listed axes, the first axis varying slowest (like nested loops in key order)."""
    per_axis = [[_named(key, choice) for choice in axis_choices(axis)] for key, axis in space.items()]
    return [Trial(index, {k: v for part in combination for k, v in part.items()})
            for index, combination in enumerate(itertools.product(*per_axis))]


def draw(axis: Axis, rng: random.Random) -> dict[str, Any]:
    """One random choice of an axis: a listed value, or a number from its range (as the marker key)."""
    if isinstance(axis, LogUniformAxis):
        low, high = axis.log_uniform
        return {"__axis__": math.exp(rng.uniform(math.log(low), math.log(high)))}
    if isinstance(axis, UniformAxis):
        return {"__axis__": rng.uniform(*axis.uniform)}
    choices = axis_choices(axis)
    return choices[rng.randrange(len(choices))]


def random_trials(sweep: SweepConfig, seed: int) -> list[Trial]:
    """`samples` independent draws over the space from one seeded generator."""
    rng = random.Random(seed)
    return [Trial(index, {k: v for key, axis in sweep.space.items() for k, v in _named(key, draw(axis, rng)).items()})
            for index in range(sweep.samples or 0)]


def trial_count(sweep: SweepConfig) -> int:
    if sweep.method != "grid":
        return sweep.samples or 0
    return math.prod(len(axis.values) if isinstance(axis, PairedAxis) else len(axis) for axis in sweep.space.values())
