"""The sweep report's plots: the metric against each swept value, every trial's validation curve, and the metric
against parameters and against training FLOPs with the Pareto front (the best metric for its size)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from llmrecipe.plots import pyplot


def _log_scale(values: Sequence[float]) -> bool:
    positive = [v for v in values if isinstance(v, (int, float)) and v > 0]
    return len(positive) == len(values) and len(positive) > 1 and max(positive) / min(positive) >= 10


def _save(plt: Any, figure: Any, axes: Any, path: Path, xlabel: str, ylabel: str, legend_size: int | None = None) -> Path:
    """Label the axes, add grid and legend, write the PNG (no software tag, so the bytes repeat) and free the figure."""
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=legend_size)
    figure.tight_layout()
    figure.savefig(path, metadata={"Software": None})
    plt.close(figure)
    return path


def metric_against(points: list[tuple[Any, float, bool]], path: Path, xlabel: str, ylabel: str) -> Path:
    """(value, metric, is_best) points; text values become categories in order of first appearance."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    xs = [p[0] for p in points]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
        categories = list(dict.fromkeys(str(x) for x in xs))
        axes.set_xticks(range(len(categories)), categories)
        xs = [categories.index(str(x)) for x in xs]
    elif _log_scale(xs):
        axes.set_xscale("log")
    axes.scatter(xs, [p[1] for p in points], color="#4c72b0", s=28, label="trial")
    best = [(x, p[1]) for x, p in zip(xs, points) if p[2]]
    if best:
        axes.scatter(*zip(*best), color="#dd8452", s=80, marker="*", label="best", zorder=3)
    return _save(plt, figure, axes, path, xlabel, ylabel)


def pareto_front(points: list[tuple[float, float]], goal: str) -> list[tuple[float, float]]:
    """Points no other point beats with less cost: sorted by cost, each better than every cheaper one."""
    front: list[tuple[float, float]] = []
    for cost, metric in sorted(points, key=lambda p: (p[0], p[1] if goal == "min" else -p[1])):
        if not front or (metric < front[-1][1] if goal == "min" else metric > front[-1][1]):
            front.append((cost, metric))
    return front


def metric_against_cost(points: list[tuple[float, float]], path: Path, xlabel: str, ylabel: str, goal: str) -> Path:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5.5, 3.6), dpi=100)
    axes.scatter([p[0] for p in points], [p[1] for p in points], color="#4c72b0", s=28, label="trial")
    front = pareto_front(points, goal)
    axes.step([p[0] for p in front], [p[1] for p in front], where="post", color="#dd8452", linewidth=1.5,
              marker="o", label="Pareto front")
    if _log_scale([p[0] for p in points]):
        axes.set_xscale("log")
    return _save(plt, figure, axes, path, xlabel, ylabel)


def scaling_fit(summary: dict[str, Any], path: Path) -> Path:
    """`--smallest`: measured metric of the trained sizes, the fitted law and its interval at every size of the
    ladder, the target, and the answer."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    ladder = summary["ladder"]
    fitted = [row for row in ladder if row["predicted"] is not None]
    if fitted:
        sizes = [row["params"] for row in fitted]
        axes.plot(sizes, [row["predicted"] for row in fitted], color="#4c72b0", label=f"fit: {summary['law']}")
        axes.fill_between(sizes, [row["low"] for row in fitted], [row["high"] for row in fitted], color="#4c72b0",
                          alpha=0.15, label="90% bootstrap interval")
    trained = [row for row in ladder if row["measured"] is not None]
    axes.scatter([row["params"] for row in trained], [row["measured"] for row in trained], color="black", s=30,
                 zorder=3, label="trained")
    answer = [row for row in ladder if row["trial"] == summary["answer"]]
    if answer:
        axes.scatter([answer[0]["params"]], [answer[0]["measured"]], marker="*", s=180, color="#dd8452", zorder=4,
                     label="smallest meeting the target")
    axes.axhline(summary["threshold"], linestyle="--", color="grey", label=f"target {summary['op']} {summary['threshold']:g}")
    axes.set_xscale("log")
    return _save(plt, figure, axes, path, "parameters", summary["metric"], legend_size=7)
