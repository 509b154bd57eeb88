"""Two results side by side: each figure's medians and their ratio, and what differed about the conditions.

A ratio is B / A: above 1 means B's number is larger, which is better for a speed and worse for a time. The
conditions (commit, CPU, GPU, package versions, load, recipe fingerprints) are shown first, because a ratio
between different machines or loads says as much about them as about the code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = conditions(a, b)
    for name in [n for n in a["benchmarks"] if n in b["benchmarks"]]:
        figures_a, figures_b = a["benchmarks"][name]["figures"], b["benchmarks"][name]["figures"]
        shared = [f for f in figures_a if f in figures_b]
        lines += ["", f"{name}: {len(shared)} figures in both"]
        if a["benchmarks"][name]["args"] != b["benchmarks"][name]["args"]:
            lines.append(f"  arguments differ: A {a['benchmarks'][name]['args']}, B {b['benchmarks'][name]['args']}")
        recipes_a, recipes_b = a["benchmarks"][name].get("recipes", {}), b["benchmarks"][name].get("recipes", {})
        for recipe in sorted(set(recipes_a) | set(recipes_b)):
            if recipes_a.get(recipe) != recipes_b.get(recipe):
                lines.append(f"  {recipe}: the plans differ (step fingerprints)")
        width = max((len(f) for f in shared), default=0)
        lines += [f"  {'figure':<{width}}  {'A median':>12}  {'B median':>12}  {'B/A':>7}  {'A min..max':>23}  "
                  f"{'B min..max':>23}"] if shared else []
        for figure in shared:
            fa, fb = figures_a[figure], figures_b[figure]
            lines.append(f"  {figure:<{width}}  {fa['median']:>12.6g}  {fb['median']:>12.6g}  "
                         f"{ratio(fa['median'], fb['median']):>7}  {span(fa):>23}  {span(fb):>23}")
    only = sorted(set(a["benchmarks"]) ^ set(b["benchmarks"]))
    if only:
        lines += ["", "in one result only: " + ", ".join(only)]
    return lines


def conditions(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    ea, eb = a["environment"], b["environment"]
    rows = [("commit", short(ea["git"]["commit"]) + dirty(ea), short(eb["git"]["commit"]) + dirty(eb)),
            ("created", a["created"], b["created"]), ("repeat", a["repeat"], b["repeat"]),
            ("cpu", ea["cpu"], eb["cpu"]), ("cores", ea["cpu_cores_usable"], eb["cpu_cores_usable"]),
            ("gpu", ", ".join(ea["gpu"]) or "none", ", ".join(eb["gpu"]) or "none"),
            ("python", ea["python"], eb["python"]),
            ("load average", f"{a['load_average_before'][0]} -> {a['load_average_after'][0]}",
             f"{b['load_average_before'][0]} -> {b['load_average_after'][0]}")]
    rows += [(package, ea["packages"].get(package), eb["packages"].get(package))
             for package in sorted(set(ea["packages"]) | set(eb["packages"]))
             if ea["packages"].get(package) != eb["packages"].get(package)]
    width = max(len(r[0]) for r in rows)
    return [f"{'':<{width}}  A: {a.get('path', '')}", f"{'':<{width}}  B: {b.get('path', '')}"] + [
        f"{label:<{width}}  {str(va):<40}  {vb}" + ("" if va == vb else "   (differs)") for label, va, vb in rows]


def ratio(a: float, b: float) -> str:
    return f"{b / a:.3f}" if a else "-"


def span(stats: dict[str, float]) -> str:
    return f"{stats['min']:.4g}..{stats['max']:.4g}"


def short(commit: str | None) -> str:
    return (commit or "?")[:12]


def dirty(env: dict[str, Any]) -> str:
    return " (uncommitted changes)" if env["git"].get("dirty") else ""
