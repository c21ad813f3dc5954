"""Statistics: bootstrap confidence intervals and rank correlation."""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
    """(mean, low, high): percentile bootstrap of the mean. NaNs are dropped first."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (float("nan"),) * 3
    if x.size == 1:
        return float(x[0]), float(x[0]), float(x[0])
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(x.mean()), float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def spearman(x, y) -> float:
    """Spearman's rho (average ranks for ties)."""
    import pandas as pd

    rx = pd.Series(np.asarray(x, dtype=float)).rank().to_numpy()
    ry = pd.Series(np.asarray(y, dtype=float)).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def slopes(x, y) -> np.ndarray:
    """Least-squares slope of each row of y [n, k] against x [k] (NaN cells ignored per row)."""
    x = np.asarray(x, dtype=float)
    y = np.atleast_2d(np.asarray(y, dtype=float))
    out = np.full(y.shape[0], np.nan)
    for i, row in enumerate(y):
        ok = ~np.isnan(row)
        if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
            xc = x[ok] - x[ok].mean()
            out[i] = float(xc @ (row[ok] - row[ok].mean()) / (xc @ xc))
    return out


def slope_ci(x, y, n_boot: int = 2000, level: float = 0.95, seed: int = 0
             ) -> tuple[float, float, float]:
    """Dose-response slope of y (rows: items, columns: the doses x) with a cluster-bootstrap
    CI: each item's own slope is computed, and items are resampled. (slope, low, high)."""
    return bootstrap_ci(slopes(x, y), n_boot, level, seed)


def permutation_p(diffs, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value that paired differences (condition minus unsteered, one per item) have
    mean zero: the signs are flipped at random (exact over all 2^n flips when n <= 14). The
    observed assignment counts among the permutations, so p is never 0."""
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan")
    obs = abs(d.mean())
    if d.size <= 14:
        signs = ((np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1) * 2 - 1
        stats = np.abs((signs * d).mean(axis=1))
        return float((stats >= obs - 1e-12).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_perm, d.size))
    stats = np.abs((signs * d).mean(axis=1))
    return float(((stats >= obs - 1e-12).sum() + 1) / (n_perm + 1))
