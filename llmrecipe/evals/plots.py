"""PNG plots with matplotlib's Agg backend (no display needed), imported only when a plot is drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_with_intervals(values: dict[str, tuple[float, float, float]], path: Path, title: str, chance: float | None) -> Path:
    """Bars of name -> (value, low, high) with their confidence intervals, and a dashed chance line."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(max(3.5, 1.2 * len(values) + 1.5), 3.2))
    names = list(values)
    heights = [values[n][0] for n in names]
    errors = [[values[n][0] - values[n][1] for n in names], [values[n][2] - values[n][0] for n in names]]
    axes.bar(names, heights, yerr=errors, capsize=6, color="#4c72b0")
    if chance is not None:
        axes.axhline(chance, linestyle="--", color="grey", label=f"chance {chance:.3f}")
        axes.legend(loc="upper right")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def loss_curves(series: dict[str, tuple[list[float], list[float]]], path: Path, title: str) -> Path:
    """Lines of name -> (steps, losses): training and validation loss against the optimizer step."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 3.5))
    for name, (steps, losses) in series.items():
        axes.plot(steps, losses, label=name, marker="o" if len(steps) < 30 else None)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats/token)")
    axes.set_title(title)
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
