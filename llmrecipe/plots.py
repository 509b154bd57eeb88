"""PNG plots with matplotlib's Agg backend (no display needed), imported only when a plot is drawn.

The ground floor of the house: training, evaluation and the run report all draw with these, and the PNGs carry no
version stamp, so the same curve gives the same bytes."""

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
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
    return path


def grouped_bars(series: dict[str, dict[str, tuple[float, float, float]]], path: Path, title: str,
                 reference: tuple[float, str] | None = None) -> Path:
    """Bars of series name -> group -> (value, low, high) with their confidence intervals: the groups along the x axis
    (e.g. categories), one coloured bar per series in each, on a 0-1 scale; a dashed (value, label) reference line."""
    plt = pyplot()
    groups = list(dict.fromkeys(group for values in series.values() for group in values))
    width = 0.8 / max(len(series), 1)
    figure, axes = plt.subplots(figsize=(max(5.0, 0.35 * len(groups) * len(series) + 2.0), 4.0))
    for index, (name, values) in enumerate(series.items()):
        shown = [g for g in groups if g in values]
        positions = [groups.index(g) + (index - (len(series) - 1) / 2) * width for g in shown]
        heights = [values[g][0] for g in shown]
        errors = [[values[g][0] - values[g][1] for g in shown], [values[g][2] - values[g][0] for g in shown]]
        axes.bar(positions, heights, width=width, yerr=errors, capsize=3, label=name)
    if reference is not None:
        axes.axhline(reference[0], linestyle="--", color="grey", label=reference[1])
    axes.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
    axes.set_ylim(0, 1)
    axes.set_title(title)
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(figure)
    return path


def loss_curves(series: dict[str, tuple[list[float], list[float]]], path: Path, title: str,
                ylabel: str = "loss (nats per token)") -> Path:
    """Lines of name -> (steps, losses): training and validation loss against the optimizer step."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    for name, (steps, losses) in series.items():
        axes.plot(steps, losses, label=name, linewidth=1.2, marker="o" if len(steps) < 30 else None, markersize=3)
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7 if len(series) > 4 else None, ncol=2 if len(series) > 8 else 1)
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return path


def training_curves(records: list[dict[str, Any]], path: Path, title: str) -> Path:
    """loss.png of a training step: its metrics records' training loss per logged step and validation loss."""
    series = {"train": [(r["step"], r["loss"]) for r in records if "loss" in r],
              "validation": [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]}
    return loss_curves({name: tuple(map(list, zip(*points))) for name, points in series.items() if points}, path, title)
