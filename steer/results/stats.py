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


# ------------------------------------------------------------------ the verdict
#
# One verdict per (task, vector, layer, metric), defined here and nowhere else: effects.csv,
# the terminal's tables and report.md all read the `verdict` column this function writes.

MIN_ITEMS = 8  # fewer items than this: no verdict (a handful of prompts cannot carry one)
FAMILY_ALPHA = 0.05  # the chance of one or more false "effect" calls in a whole run

EFFECT = "effect"
NO_EFFECT = "no effect"
TOO_FEW_ITEMS = "too few items"
NO_RANDOM_CONTROL = "no random control"
NO_UNSTEERED = "no baseline"
TASK_AT_CHANCE = "task at chance"
CONTROL = "control"  # a comparison condition (a random direction, the prompting baseline)
VERDICTS = (EFFECT, NO_EFFECT, TOO_FEW_ITEMS, NO_RANDOM_CONTROL, NO_UNSTEERED, TASK_AT_CHANCE,
            CONTROL)
CONTROL_PREFIXES = ("random", "prompt:")  # vectors that are controls, never tested themselves


def t_interval(mean: float, sd: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval (low, high) for a mean from its sample's `mean`, standard
    deviation `sd` (ddof 1) and size `n`; (nan, nan) when n < 2.

    Example:
        >>> from steer.results.stats import t_interval
        >>> [round(v, 3) for v in t_interval(1.0, 1.0, 10)]
        [0.285, 1.715]
    """
    from scipy import stats as sps

    if not n >= 2 or not np.isfinite(sd):
        return float("nan"), float("nan")
    half = float(sps.t.ppf(0.5 + level / 2, n - 1)) * float(sd) / float(np.sqrt(n))
    return float(mean - half), float(mean + half)


def welch_interval(a: tuple[float, float, int], b: tuple[float, float, int],
                   level: float = 0.95) -> tuple[float, float, float]:
    """Welch's confidence interval for mean(a) - mean(b), each given as (mean, sd, n): the
    difference, low, high (Welch-Satterthwaite degrees of freedom); nans when n < 2 on a side.

    Example:
        >>> from steer.results.stats import welch_interval
        >>> [round(v, 3) for v in welch_interval((1.0, 1.0, 10), (0.0, 2.0, 40))]
        [1.0, 0.086, 1.914]
    """
    from scipy import stats as sps

    (ma, sa, na), (mb, sb, nb) = a, b
    diff = float(ma - mb)
    if not (na >= 2 and nb >= 2 and np.isfinite(sa) and np.isfinite(sb)):
        return diff, float("nan"), float("nan")
    va, vb = sa * sa / na, sb * sb / nb
    se = float(np.sqrt(va + vb))
    if se == 0:  # both samples constant: the difference is exact
        return diff, diff, diff
    df = float((va + vb) ** 2 / (va * va / (na - 1) + vb * vb / (nb - 1)))
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    return diff, diff - half, diff + half


def is_control(vector: str) -> bool:
    """Whether a vector name is a control (a random direction, the pooled `random`, or an
    instructed `prompt:<emotion>` condition) rather than a steering vector under test.

    Example:
        >>> from steer.results.stats import is_control
        >>> is_control("random-3"), is_control("prompt:calm"), is_control("desperate")
        (True, True, False)
    """
    return vector.startswith(CONTROL_PREFIXES)


def assign_verdicts(eff, at_chance: set[str] = frozenset(), alpha: float = FAMILY_ALPHA,
                    min_items: int = MIN_ITEMS):
    """The verdict of every row of an effects table (`steer.results.tables.effects`), returned
    as a copy with the columns `m`, `level`, `slope_adj_low/high`, `diff_random`,
    `diff_adj_low/high` and `verdict`.

    A row is an `effect` only when it has at least `min_items` items, the t-interval of its
    slope (the mean of per-item slopes) excludes zero, and Welch's interval for its slope minus
    the random control's excludes zero on the same side: a slope that is merely less negative
    than the control's, or whose own interval holds zero, is `no effect`. Both intervals are at
    level 1 - alpha/m, Bonferroni over the m rows tested in the run (every row that reaches
    this test), so that the chance of any false `effect` in a run stays below alpha. Rows that
    are not tested say why: `task at chance` (tasks in `at_chance`, which another check found
    the unsteered model cannot do), `no baseline` (no scale 0), `no random control`, `too few
    items`, or `control` (the random directions and instructed conditions themselves).

    Needs the columns task, vector, slope, slope_sd, n_items, random_slope, random_sd, random_n
    and unsteered (whether the row has scale 0). Calling it again recomputes everything.

    Example:
        >>> import pandas as pd
        >>> from steer.results.stats import assign_verdicts
        >>> eff = pd.DataFrame({"task": "t", "vector": ["joy", "calm", "sad", "random"],
        ...     "slope": [1.0, 0.1, 1.0, 0.0], "slope_sd": [0.5, 0.5, 0.5, 0.5],
        ...     "n_items": [20, 20, 3, 40], "random_slope": [0.0, 0.0, 0.0, None],
        ...     "random_sd": [0.5, 0.5, 0.5, None], "random_n": [40, 40, 40, None],
        ...     "unsteered": True})
        >>> v = assign_verdicts(eff)
        >>> v.verdict.tolist(), int(v.m.iloc[0])
        (['effect', 'no effect', 'too few items', 'control'], 2)
        >>> assign_verdicts(eff, at_chance={"t"}).verdict.tolist()[:2]
        ['task at chance', 'task at chance']
    """
    import pandas as pd

    out = eff.copy()
    verdict = pd.Series(NO_EFFECT, index=out.index, dtype=object)
    control = out.vector.map(is_control)
    chance = out.task.isin(set(at_chance)) & ~control
    unsteered = out["unsteered"].fillna(False).astype(bool)
    random_n = pd.to_numeric(out.random_n, errors="coerce").fillna(0)
    has_control = random_n > 0
    enough = (pd.to_numeric(out.n_items, errors="coerce").fillna(0) >= min_items) & (
        random_n >= min_items)
    # the first reason that applies is the one given
    reasons = [(control, CONTROL), (chance, TASK_AT_CHANCE), (~unsteered, NO_UNSTEERED),
               (~has_control, NO_RANDOM_CONTROL), (~enough, TOO_FEW_ITEMS)]
    tested = pd.Series(True, index=out.index)
    for mask, label in reasons:
        verdict[tested & mask] = label
        tested &= ~mask
    m = int(tested.sum())
    level = 1 - alpha / m if m else float("nan")
    cols = {k: np.full(len(out), np.nan) for k in
            ("slope_adj_low", "slope_adj_high", "diff_random", "diff_adj_low", "diff_adj_high")}
    for i, r in enumerate(out.itertuples()):
        if not tested.iloc[i]:
            continue
        n, n_r = int(r.n_items), int(r.random_n)
        lo, hi = t_interval(r.slope, r.slope_sd, n, level)
        d, dlo, dhi = welch_interval((r.slope, r.slope_sd, n),
                                     (r.random_slope, r.random_sd, n_r), level)
        for k, v in zip(cols, (lo, hi, d, dlo, dhi)):
            cols[k][i] = v
        real = (lo > 0 and dlo > 0) or (hi < 0 and dhi < 0)
        verdict.iloc[i] = EFFECT if real else NO_EFFECT
    return out.assign(m=m, level=level, **cols, verdict=verdict)


def verdict_rule(m: int, alpha: float = FAMILY_ALPHA, min_items: int = MIN_ITEMS) -> str:
    """The one sentence that says how a verdict is reached, for report.md and the terminal.

    Example:
        >>> from steer.results.stats import verdict_rule
        >>> verdict_rule(200).split(";")[1].split(" (")[0].strip()
        'both are t-intervals at level 1 - 0.05/m, Bonferroni across the m = 200 metrics tested'
    """
    return (f"A verdict of `effect` needs at least {min_items} items, a slope whose interval "
            "excludes 0, and a slope minus the random control's (Welch) whose interval excludes 0 "
            f"on the same side; both are t-intervals at level 1 - {alpha:g}/m, Bonferroni across "
            f"the m = {m} metrics tested (the 95% bootstrap CIs are shown for reading only).")


def verdict_notes(eff) -> list[str]:
    """One line for each reason that kept verdicts out of a whole run (no scale 0, no random
    control, too few items), saying what to change; empty when every row could be tested.

    Example:
        >>> import pandas as pd
        >>> from steer.results.stats import verdict_notes
        >>> verdict_notes(pd.DataFrame({"verdict": ["no baseline", "control"]}))[0][:48]
        'No verdicts for 1 row: the run has no scale 0 (t'
    """
    if eff is None or "verdict" not in getattr(eff, "columns", ()):
        return []
    counts = eff.verdict.value_counts()
    notes = []
    for label, why in ((NO_UNSTEERED, "the run has no scale 0 (the unsteered model): add 0.0 to "
                        "steering.scales"),
                       (NO_RANDOM_CONTROL, "the run has no random-direction control: set "
                        "steering.random_controls to 1 or more"),
                       (TOO_FEW_ITEMS, f"fewer than {MIN_ITEMS} items (prompts) per metric: "
                        f"give the task at least {MIN_ITEMS}")):
        n = int(counts.get(label, 0))
        if n:
            notes.append(f"No verdicts for {n} row{'s' if n != 1 else ''}: {why}.")
    return notes
