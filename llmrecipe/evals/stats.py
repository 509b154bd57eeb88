"""Confidence intervals and A/B verdicts by bootstrap over examples.

Every suite metric is a function of per-example columns summed over the examples (accuracy = sum of
`correct` / sum of `count`, loss = sum of `nats` / sum of `tokens`, corpus BLEU = a function of summed
n-gram counts). Resampling examples with replacement is then one matrix product: (resamples x examples)
counts times (examples x columns) values gives each resample's column sums. The same resampled
examples are used for both models in a paired comparison, which removes the spread that comes from
which examples happen to be in the set (Koehn, 2004; Berg-Kirkpatrick et al., 2012).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

LEVEL = 0.95
"""Confidence level of every interval."""
MIN_EXAMPLES = 10
"""Below this many paired examples the bootstrap cannot see the spread (one document gives a zero-width interval)."""


@dataclass(frozen=True)
class Metric:
    of_sums: Callable[[dict[str, float]], float]
    """Column sums over the examples -> the metric."""
    higher_is_better: bool
    compared: bool = True
    """False for a property of the data rather than of the model (chance level): `compare` leaves it out."""


Columns = dict[str, np.ndarray]
"""Column name -> one value per example, all the same length."""


def value(metric: Metric, columns: Columns) -> float:
    return float(metric.of_sums({name: float(np.sum(column)) for name, column in columns.items()}))


def resample_counts(examples: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, examples): how often each example is drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(examples, np.full(examples, 1.0 / examples), size=resamples).astype(np.float64)


def resampled_values(metric: Metric, columns: Columns, counts: np.ndarray) -> np.ndarray:
    """The metric on each resample, (resamples,)."""
    names = list(columns)
    sums = counts @ np.stack([np.asarray(columns[n], dtype=np.float64) for n in names], axis=1)  # (R, C)
    return np.array([metric.of_sums(dict(zip(names, row.tolist()))) for row in sums], dtype=np.float64)


def confidence_interval(metric: Metric, columns: Columns, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the metric (95%)."""
    if len(next(iter(columns.values()))) == 0:
        return (float("nan"), float("nan"))
    _, low, high = values_with_intervals({"metric": metric}, columns, resamples, seed)["metric"]
    return low, high


def values_with_intervals(metrics: dict[str, Metric], columns: Columns, resamples: int,
                          seed: int) -> dict[str, tuple[float, float, float]]:
    """Each metric's value and percentile bootstrap interval (95%), (value, low, high), the resamples drawn once for
    all of them. Needs at least one example."""
    counts = resample_counts(len(next(iter(columns.values()))), resamples, seed)
    return {name: (value(metric, columns), *_percentiles(resampled_values(metric, columns, counts)))
            for name, metric in metrics.items()}


@dataclass(frozen=True)
class Comparison:
    a: float
    b: float
    difference: float
    """a - b on all examples."""
    low: float
    high: float
    """Paired bootstrap interval of a - b (95%)."""
    verdict: str
    """`A better`, `B better`, `no significant difference`, or why no verdict can be given."""


def paired_comparison(metric: Metric, a: Columns, b: Columns, resamples: int, seed: int) -> Comparison:
    """A - B with a paired bootstrap interval; A or B is better only when the interval excludes zero."""
    examples = len(next(iter(a.values())))
    counts = resample_counts(examples, resamples, seed)
    differences = resampled_values(metric, a, counts) - resampled_values(metric, b, counts)
    low, high = _percentiles(differences)
    value_a, value_b = value(metric, a), value(metric, b)
    if examples < MIN_EXAMPLES:
        verdict = f"too few examples to tell ({examples} < {MIN_EXAMPLES})"
    elif not (np.isfinite(value_a) and np.isfinite(value_b)):
        verdict = "undefined on one side"
    elif low > 0 or high < 0:
        a_higher = low > 0
        verdict = "A better" if a_higher == metric.higher_is_better else "B better"
    else:
        verdict = "no significant difference"
    return Comparison(value_a, value_b, value_a - value_b, low, high, verdict)


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return (float("nan"), float("nan"))
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)
