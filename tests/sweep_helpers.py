"""Small sweep recipes over the generated corpus of tests/conftest.py."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_tiny_recipe

GRID = """
[sweep]
metric = "steps.base.best_val_loss"
parallel = 2
{more}
[sweep.space]
"steps.base.optim.lr" = [3e-3, 1e-2]
"steps.base.model.n_layer" = {{ values = [1, 2], with = {{ "steps.base.model.d_model" = [16, 32] }} }}
"""


def write_sweep_recipe(folder: Path, steps: int = 20, sweep: str | None = None, more: str = "", **kwargs) -> Path:
    """The tiny recipe with a 4-trial grid (2 learning rates x 2 paired sizes), or the `sweep` table given."""
    return write_tiny_recipe(folder, steps=steps, extra=sweep if sweep is not None else GRID.format(more=more), **kwargs)
