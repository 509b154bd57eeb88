"""The scaling law of Hoffmann et al. (2022), L(N, D) = E + A / N^alpha + B / D^beta, fitted to a few trials.

Fitted by variable projection: for each (alpha, beta) on a grid, E, A and B are a linear least-squares problem;
the pair with the smallest squared error wins (A and B are kept non-negative: loss falls with size and data).
When every point has the same D the data term cannot be told from E, so the fit is E + A / N^alpha. Bootstrap
refits over resampled points give the prediction's interval. Numpy only, deterministic for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXPONENTS = np.linspace(0.05, 1.5, 59)
"""Candidate alpha and beta: the published fits lie near 0.3; tiny models on little data go wider."""
RESAMPLES = 200
SEED = 0


@dataclass(frozen=True)
class Law:
    E: float
    A: float
    alpha: float
    B: float = 0.0
    beta: float = 0.0

    def __call__(self, n: np.ndarray | float, d: np.ndarray | float) -> np.ndarray:
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n**self.alpha + (self.B / d**self.beta if self.B else 0.0)

    def describe(self) -> str:
        text = f"L = {self.E:.4g} + {self.A:.4g} / N^{self.alpha:.3g}"
        return text + (f" + {self.B:.4g} / D^{self.beta:.3g}" if self.B else "")


def fit(n: np.ndarray, d: np.ndarray, loss: np.ndarray) -> Law | None:
    """The least-squares law through the points, or None with fewer points than it has free parameters."""
    n, d, loss = (np.asarray(x, dtype=float) for x in (n, d, loss))
    with_data = len(np.unique(d)) > 1
    if len(n) < (5 if with_data else 3):
        return None
    best: tuple[float, Law] | None = None
    for alpha in EXPONENTS:
        for beta in EXPONENTS if with_data else [0.0]:
            columns = [np.ones_like(n), n**-alpha] + ([d**-beta] if with_data else [])
            design = np.stack(columns, axis=1)
            coefficients, *_ = np.linalg.lstsq(design, loss, rcond=None)
            if np.any(coefficients[1:] < 0):
                continue
            error = float(np.sum((design @ coefficients - loss) ** 2))
            if best is None or error < best[0]:
                law = Law(float(coefficients[0]), float(coefficients[1]), float(alpha),
                          float(coefficients[2]) if with_data else 0.0, float(beta))
                best = (error, law)
    return best[1] if best else None


def bootstrap(n: np.ndarray, d: np.ndarray, loss: np.ndarray, at_n: np.ndarray, at_d: np.ndarray,
              resamples: int = RESAMPLES, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """5th and 95th percentiles of the predictions at (at_n, at_d) of laws fitted to resampled points (resamples
    too degenerate to fit are skipped; with none left the interval is NaN)."""
    rng = np.random.default_rng(seed)
    n, d, loss = (np.asarray(x, dtype=float) for x in (n, d, loss))
    predictions = []
    for _ in range(resamples):
        pick = rng.integers(0, len(n), len(n))
        law = fit(n[pick], d[pick], loss[pick])
        if law is not None:
            predictions.append(law(at_n, at_d))
    if not predictions:
        nan = np.full(len(at_n), np.nan)
        return nan, nan
    stacked = np.stack(predictions)
    return np.percentile(stacked, 5, axis=0), np.percentile(stacked, 95, axis=0)
