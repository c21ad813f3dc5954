"""The tables of a run, computed from its results: per-condition summary with bootstrap CIs,
dose-response effects against the random control with their verdicts (defined in
steer.results.stats), and trends. Pure functions of DataFrames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from steer.results.stats import bootstrap_ci, spearman

PLAIN_METRICS = ["sentiment", "perplexity", "repetition"]


def finite_values(results: pd.DataFrame) -> pd.Series:
    """Which rows of a results table hold a finite value (not NaN, inf or missing).

    Example:
        >>> import pandas as pd
        >>> from steer.results.tables import finite_values
        >>> finite_values(pd.DataFrame({"value": [0.5, float("nan"), float("inf")]})).tolist()
        [True, False, False]
    """
    return pd.Series(np.isfinite(pd.to_numeric(results["value"], errors="coerce")
                                 .to_numpy(dtype=float)), index=results.index)


def summarize(results: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """One row per (task, vector, layer, scale, metric): mean and a 95% bootstrap CI over the
    finite values (`n` of them), and `n_nonfinite`, the values that were NaN or inf.

    Seeds of one item are averaged first and items are resampled (a cluster bootstrap), since
    samples of the same prompt are not independent. Random directions are also pooled as
    vector `random` when there are several (each item under each direction is one unit). A
    non-finite value is never averaged in, and a condition whose values are all non-finite
    keeps its row (mean NaN, n 0)."""
    # the bootstrap unit: an item, or for the pooled random control an (item, direction)
    frames = [results.assign(unit=results["item"].astype(str))]
    rnd = results[results.vector.str.startswith("random-")]
    if rnd.vector.nunique() > 1:
        frames.append(rnd.assign(vector="random", unit=rnd["item"].astype(str) + "/" + rnd.vector))
    everything = pd.concat(frames, ignore_index=True)
    keys = ["task", "vector", "layer", "scale", "metric"]
    ok = finite_values(everything)
    df = everything[ok]
    nonfinite = everything[~ok].groupby(keys, sort=True).size()
    grouped = df.groupby(keys, sort=True)["value"]
    means, sizes = grouped.mean(), grouped.size()
    per_item = df.groupby(keys + ["unit"], sort=True)["value"].mean()
    rows = []
    for key, g in per_item.groupby(level=list(range(len(keys))), sort=True):
        mean, lo, hi = bootstrap_ci(g.to_numpy(), n_boot=n_boot)
        rows.append(dict(zip(keys, key), mean=means[key], ci_low=lo, ci_high=hi,
                         n=int(sizes[key]), n_nonfinite=int(nonfinite.get(key, 0))))
    # conditions with no finite value at all: kept, so that they do not vanish from the table
    for key, count in nonfinite.items():
        if key not in means.index:
            rows.append(dict(zip(keys, key), mean=np.nan, ci_low=np.nan, ci_high=np.nan, n=0,
                             n_nonfinite=int(count)))
    out = pd.DataFrame(rows, columns=keys + ["mean", "ci_low", "ci_high", "n", "n_nonfinite"])
    if len(out) > len(means):  # the added rows go to their sorted places
        out = out.sort_values(keys, kind="stable", ignore_index=True)
    return out


def steered_emotions(vectors: list[str]) -> list[str]:
    from steer.lm.directions import parse_expression

    out: list[str] = []
    for v in vectors:
        if v.startswith(("random", "prompt:")):
            continue
        for _, name in parse_expression(v):
            if name not in out:
                out.append(name)
    return out


def is_behaviour(metric: str) -> bool:
    return metric.startswith(("p_", "elo.")) or metric.endswith("_rate")


def headline_metrics(summary: pd.DataFrame, vectors: list[str]) -> list[str]:
    present = set(summary.metric)
    behaviour = sorted(m for m in present if is_behaviour(m)
                       and m not in ("honest_fail_rate", "explained_rate", "broken_rate"))
    ro = [f"readout.{e}" for e in steered_emotions(vectors) if f"readout.{e}" in present]
    if not ro:
        ro = sorted(m for m in present if m.startswith("readout."))[:4]
    return behaviour + ro + [m for m in PLAIN_METRICS if m in present]


def effects(results: pd.DataFrame, metrics: list[str] | None = None, n_boot: int = 2000,
            at_chance: set[str] = frozenset()) -> pd.DataFrame:
    """Per task, vector, layer and metric: the dose-response slope against scale (the mean of
    each item's own slope, `n_items` items, their standard deviation `slope_sd`) with a 95%
    cluster-bootstrap CI for reading (items resampled), the difference from the unsteered
    model at the largest positive and the most negative scale with sign-flip permutation
    p-values (paired by item), the same slope for the pooled random-direction control
    (`random_*`; each (item, direction) one unit), and the verdict of
    `steer.results.stats.assign_verdicts` (tasks in `at_chance` get `task at chance`).
    Instructed `prompt:<emotion>` conditions are left out (they are compared elsewhere).

    Example:
        >>> import numpy as np, pandas as pd
        >>> from steer.results.tables import effects
        >>> rng = np.random.default_rng(0)
        >>> rows = [("t", i, v, 2, s, 0, "m", 0.5 + k * s + rng.normal(0, 0.05))
        ...         for i in range(10) for s in (-0.2, 0.0, 0.2)
        ...         for v, k in (("joy", 1.0), ("random-0", 0.0))]
        >>> res = pd.DataFrame(rows, columns=["task", "item", "vector", "layer", "scale",
        ...                                   "seed", "metric", "value"])
        >>> effects(res, n_boot=200).set_index("vector").verdict.to_dict()
        {'joy': 'effect', 'random': 'control', 'random-0': 'control'}
    """
    from steer.results.stats import assign_verdicts, bootstrap_ci, permutation_p, slopes

    df = results[finite_values(results)]  # NaN and inf alike (counted in the summary)
    df = df[~df.vector.astype(str).str.startswith("prompt:")]
    if metrics is not None:
        df = df[df.metric.isin(metrics)]
    rnd = df[df.vector.str.startswith("random-")]
    if not rnd.empty:
        # pooled control: every (item, direction) is one unit
        df = pd.concat([df, rnd.assign(vector="random", item=rnd.item.astype(str) + "/"
                                       + rnd.vector)], ignore_index=True)
    df = df.assign(item=df.item.astype(str))
    rows = []
    # one pivot for everything (a pivot per group is slow with hundreds of read-out metrics)
    wide = df.pivot_table(index=["task", "vector", "layer", "metric", "item"], columns="scale",
                          values="value", aggfunc="mean") if not df.empty else pd.DataFrame()
    groups = wide.groupby(level=[0, 1, 2, 3], sort=True) if not wide.empty else []
    for (task, vec, layer, metric), table in groups:
        table = table.droplevel([0, 1, 2, 3]).dropna(axis=1, how="all")
        if table.shape[1] < 2:
            continue
        scales = table.columns.to_numpy(dtype=float)
        per_item = slopes(scales, table.to_numpy())
        per_item = per_item[np.isfinite(per_item)]
        slope, lo, hi = bootstrap_ci(per_item, n_boot)
        row = dict(task=task, vector=vec, layer=layer, metric=metric, slope=slope,
                   slope_low=lo, slope_high=hi,
                   slope_sd=float(per_item.std(ddof=1)) if per_item.size > 1 else np.nan,
                   n_items=int(per_item.size), unsteered=bool(0.0 in table.columns))
        if 0.0 in table.columns:
            for label, sc in (("top", scales.max()), ("bottom", scales.min())):
                if sc == 0:
                    continue
                d = (table[sc] - table[0.0]).to_numpy()
                row[f"diff_{label}"] = float(pd.Series(d).mean())
                row[f"p_{label}"] = permutation_p(d)
                row[f"scale_{label}"] = float(sc)
        rows.append(row)
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    # the pooled random control's slope beside each row (same task, layer and metric)
    ref = out[out.vector == "random"].set_index(["task", "layer", "metric"])
    ref = ref[["slope", "slope_low", "slope_high", "slope_sd", "n_items"]].rename(columns={
        "slope": "random_slope", "slope_low": "random_slope_low", "slope_high":
        "random_slope_high", "slope_sd": "random_sd", "n_items": "random_n"})
    out = out.join(ref, on=["task", "layer", "metric"])
    out.loc[out.vector.str.startswith("random"), list(ref.columns)] = np.nan
    return assign_verdicts(out, at_chance)


def trends(summary: pd.DataFrame, vectors: list[str], eff: pd.DataFrame | None = None
           ) -> pd.DataFrame:
    """Per task, vector, layer and headline metric with 3 or more scales: Spearman rho of the
    condition mean against scale, the means at the lowest and highest scale, and the row's
    verdict from the effects table `eff` (the same one effects.csv holds; empty without `eff`).
    Controls (random directions, `prompt:` conditions) have no trend of their own.

    Example:
        >>> import pandas as pd
        >>> from steer.results.tables import trends
        >>> s = pd.DataFrame({"task": "t", "vector": "joy", "layer": 2, "metric": "sentiment",
        ...                   "scale": [-0.2, 0.0, 0.2], "mean": [0.1, 0.3, 0.6]})
        >>> e = pd.DataFrame({"task": ["t"], "vector": ["joy"], "layer": [2],
        ...                   "metric": ["sentiment"], "verdict": ["too few items"]})
        >>> trends(s, ["joy"], e)[["rho", "at_highest", "verdict"]].values.tolist()
        [[1.0, 0.6, 'too few items']]
    """
    from steer.results.stats import is_control

    verdicts = ({} if eff is None or eff.empty or "verdict" not in eff else
                eff.set_index(["task", "vector", "layer", "metric"]).verdict.to_dict())
    rows = []
    for m in headline_metrics(summary, vectors):
        sub = summary[summary.metric == m]
        for (task, vec, layer), g in sub.groupby(["task", "vector", "layer"]):
            if g.scale.nunique() < 3 or is_control(vec):
                continue
            g = g.sort_values("scale")
            rows.append(dict(task=task, vector=vec, layer=layer, metric=m,
                             rho=spearman(g.scale, g["mean"]), at_lowest=g["mean"].iloc[0],
                             at_highest=g["mean"].iloc[-1],
                             verdict=verdicts.get((task, vec, layer, m), "")))
    return pd.DataFrame(rows, columns=["task", "vector", "layer", "metric", "rho", "at_lowest",
                                       "at_highest", "verdict"])


def trends_note(summary: pd.DataFrame, vectors: list[str]) -> str | None:
    """Why a run has no trends, in one line (None when it has some).

    Example:
        >>> import pandas as pd
        >>> from steer.results.tables import trends_note
        >>> s = pd.DataFrame({"task": "t", "vector": "joy", "layer": 2, "metric": "sentiment",
        ...                   "scale": [0.0, 0.2], "mean": [0.3, 0.6]})
        >>> trends_note(s, ["joy"])
        'No trends: the run has 2 scales (0, 0.2); a trend against scale needs 3 or more.'
    """
    from steer.results.stats import is_control

    if not trends(summary, vectors).empty:
        return None
    steered = summary[~summary.vector.astype(str).map(is_control)]
    if not vectors or steered.empty:
        return "No trends: nothing was steered."
    scales = sorted(set(steered.scale))
    if len(scales) < 3:
        return (f"No trends: the run has {len(scales)} scale{'s' if len(scales) != 1 else ''} "
                f"({', '.join(f'{x:g}' for x in scales)}); a trend against scale needs 3 or more.")
    return "No trends: no headline metric has values at 3 or more scales."
