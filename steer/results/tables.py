"""The tables of a run, computed from its results: per-condition summary with bootstrap CIs,
dose-response effects against the random control, and trends. Pure functions of DataFrames."""

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
        if v.startswith("random-"):
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


def effects(results: pd.DataFrame, metrics: list[str] | None = None, n_boot: int = 2000
            ) -> pd.DataFrame:
    """Per task, vector, layer and metric: the dose-response slope against scale with a 95%
    cluster-bootstrap CI (each item's own slope; items resampled), the difference from the
    unsteered model at the largest positive and the most negative scale with sign-flip
    permutation p-values (paired by item), and the same slope for the random-direction
    control, with `exceeds_random`: the two slope CIs do not overlap."""
    from steer.results.stats import permutation_p, slope_ci

    df = results[finite_values(results)]  # NaN and inf alike (counted in the summary)
    if metrics is not None:
        df = df[df.metric.isin(metrics)]
    rnd = df[df.vector.str.startswith("random-")]
    if not rnd.empty:
        # pooled control: every (item, direction) is one unit of the bootstrap
        df = pd.concat([df, rnd.assign(vector="random", item=rnd.item.astype(str) + "/"
                                       + rnd.vector)], ignore_index=True)
    df = df.assign(item=df.item.astype(str))
    rows = []
    # one pivot for everything (a pivot per group is slow with hundreds of read-out metrics)
    wide = df.pivot_table(index=["task", "vector", "layer", "metric", "item"], columns="scale",
                          values="value", aggfunc="mean")
    for (task, vec, layer, metric), table in wide.groupby(level=[0, 1, 2, 3], sort=True):
        table = table.droplevel([0, 1, 2, 3]).dropna(axis=1, how="all")
        if table.shape[1] < 2:
            continue
        scales = table.columns.to_numpy(dtype=float)
        slope, lo, hi = slope_ci(scales, table.to_numpy(), n_boot)
        row = dict(task=task, vector=vec, layer=layer, metric=metric, slope=slope,
                   slope_low=lo, slope_high=hi, n_items=len(table))
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
    control = "random" if "random" in set(out.vector) else None
    flags, r_lo, r_hi = [], [], []
    for r in out.itertuples():
        ref = out[(out.task == r.task) & (out.vector == control) & (out.layer == r.layer)
                  & (out.metric == r.metric)] if control else out.iloc[0:0]
        if r.vector.startswith("random") or ref.empty:
            flags.append(None)
            r_lo.append(float("nan"))
            r_hi.append(float("nan"))
            continue
        lo, hi = float(ref.slope_low.iloc[0]), float(ref.slope_high.iloc[0])
        r_lo.append(lo)
        r_hi.append(hi)
        flags.append(bool(r.slope_low > hi or r.slope_high < lo))
    return out.assign(random_slope_low=r_lo, random_slope_high=r_hi, exceeds_random=flags)


def random_control(summary: pd.DataFrame) -> str | None:
    names = set(summary.vector)
    return "random" if "random" in names else ("random-0" if "random-0" in names else None)


def trends(summary: pd.DataFrame, vectors: list[str]) -> pd.DataFrame:
    """Per task, vector, layer and headline metric: Spearman rho of the condition mean against
    scale, the means at the lowest and highest scale, and whether the highest-scale mean lies
    outside the random control's 95% CI at that scale."""
    rows = []
    control = random_control(summary)
    for m in headline_metrics(summary, vectors):
        sub = summary[summary.metric == m]
        for (task, vec, layer), g in sub.groupby(["task", "vector", "layer"]):
            if g.scale.nunique() < 3 or vec.startswith("random"):
                continue
            g = g.sort_values("scale")
            top = g.iloc[-1]
            ref = sub[(sub.task == task) & (sub.vector == control) & (sub.layer == layer)
                      & (sub.scale == top.scale)] if control else sub.iloc[0:0]
            beyond = (bool(top["mean"] > ref.ci_high.iloc[0] or top["mean"] < ref.ci_low.iloc[0])
                      if len(ref) else None)
            rows.append(dict(task=task, vector=vec, layer=layer, metric=m,
                             rho=spearman(g.scale, g["mean"]), at_lowest=g["mean"].iloc[0],
                             at_highest=top["mean"], beyond_random_ci=beyond))
    return pd.DataFrame(rows)
