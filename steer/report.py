"""Summaries for people: a rich table, dose-response plots and report.md."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from steer.metrics.stats import spearman

PLAIN_METRICS = ["sentiment", "perplexity", "repetition"]


def _steered_emotions(vectors: list[str]) -> list[str]:
    from steer.expressions import parse_expression

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
    ro = [f"readout.{e}" for e in _steered_emotions(vectors) if f"readout.{e}" in present]
    if not ro:
        ro = sorted(m for m in present if m.startswith("readout."))[:4]
    return behaviour + ro + [m for m in PLAIN_METRICS if m in present]


def effects(results: pd.DataFrame, metrics: list[str] | None = None, n_boot: int = 2000
            ) -> pd.DataFrame:
    """Per task, vector, layer and metric: the dose-response slope against scale with a 95%
    cluster-bootstrap CI (each item's own slope; items resampled), the difference from the
    unsteered baseline at the largest positive and the most negative scale with sign-flip
    permutation p-values (paired by item), and the same slope for the random-direction
    control, with `exceeds_random`: the two slope CIs do not overlap."""
    from steer.metrics.stats import permutation_p, slope_ci

    df = results.dropna(subset=["value"])
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


def effects_table(eff: pd.DataFrame, metrics: list[str]) -> Table:
    table = Table(title="dose-response slope per unit scale (95% CI), vs the random control",
                  title_style="bold")
    for col in ("task", "vector", "metric", "slope [95% CI]", "random slope CI",
                "diff @top (p)", "exceeds random"):
        table.add_column(col, justify="left" if col in ("task", "vector", "metric") else "right")
    if eff.empty:
        return table
    for r in eff[eff.metric.isin(metrics) & ~eff.vector.str.startswith("random")].itertuples():
        diff = (f"{r.diff_top:+.3g} (p={r.p_top:.2g})" if pd.notna(getattr(r, "diff_top", None))
                else "")
        rnd = ("" if pd.isna(r.random_slope_low)
               else f"[{r.random_slope_low:+.3g}, {r.random_slope_high:+.3g}]")
        flag = "" if pd.isna(r.exceeds_random) else ("yes" if bool(r.exceeds_random) else "no")
        table.add_row(r.task, f"{r.vector} (L{r.layer})", r.metric,
                      f"{r.slope:+.3g} [{r.slope_low:+.3g}, {r.slope_high:+.3g}]", rnd, diff, flag)
    return table


def summary_table(summary: pd.DataFrame, vectors: list[str]) -> Table:
    """Conditions as rows, headline metrics as columns; cells are `mean ±half-CI`."""
    metrics = headline_metrics(summary, vectors)
    keys = ["task", "vector", "layer", "scale"]
    fixed = {k: summary[k].iloc[0] for k in ("task", "layer") if summary[k].nunique() == 1}
    title = "mean ±95% CI half-width" + "".join(f", {k} {v}" for k, v in fixed.items())
    table = Table(title=title, title_style="bold")
    shown = [k for k in keys if k not in fixed]
    for col in shown:
        table.add_column(col, justify="right" if col in ("layer", "scale") else "left")
    for m in metrics:
        table.add_column(m.replace("readout.", "ro:").replace("perplexity", "ppl"),
                         justify="right", overflow="fold")
    wide = summary[summary.metric.isin(metrics)]
    pooled = "random" in set(summary.vector)
    for key, g in wide.groupby(keys):
        row = dict(zip(keys, key))
        if pooled and row["vector"].startswith("random-"):
            continue  # the pooled control is shown instead
        cells = []
        for m in metrics:
            r = g[g.metric == m]
            if r.empty:
                cells.append("")
                continue
            mean, lo, hi = r["mean"].iloc[0], r.ci_low.iloc[0], r.ci_high.iloc[0]
            cells.append(f"{mean:.3g} ±{(hi - lo) / 2:.2g}")
        shown_vals = [f"{row[k]:+.3g}" if k == "scale" else str(row[k]) for k in shown]
        table.add_row(*shown_vals, *cells)
    return table


def trends_table(summary: pd.DataFrame, vectors: list[str]) -> Table:
    tr = trends(summary, vectors)
    table = Table(title="trend against scale", title_style="bold")
    for col in ("vector", "metric", "rho", "lowest", "highest", "beyond random CI"):
        table.add_column(col, justify="left" if col in ("vector", "metric") else "right")
    for r in tr.itertuples():
        beyond = "" if r.beyond_random_ci is None else ("yes" if r.beyond_random_ci else "no")
        table.add_row(f"{r.vector} (L{r.layer})", r.metric, f"{r.rho:+.2f}", f"{r.at_lowest:.3g}",
                      f"{r.at_highest:.3g}", beyond)
    return table


def _random_control(summary: pd.DataFrame) -> str | None:
    names = set(summary.vector)
    return "random" if "random" in names else ("random-0" if "random-0" in names else None)


def trends(summary: pd.DataFrame, vectors: list[str]) -> pd.DataFrame:
    """Per task, vector, layer and headline metric: Spearman rho of the condition mean against
    scale, the means at the lowest and highest scale, and whether the highest-scale mean lies
    outside the random control's 95% CI at that scale."""
    rows = []
    control = _random_control(summary)
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


def dose_response_plots(summary: pd.DataFrame, out_dir: Path, vectors: list[str]) -> list[Path]:
    """One PNG per (task, headline metric): mean vs scale per vector with CI bands, and the
    random-direction control as a grey band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    if summary.scale.nunique() < 2:
        return paths  # nothing was steered: no dose-response to draw
    random_name = "random" if "random" in set(summary.vector) else None
    for task in sorted(summary.task.unique()):
        for m in headline_metrics(summary, vectors):
            sub = summary[(summary.task == task) & (summary.metric == m)]
            if sub.empty:
                continue
            fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
            for (vec, layer), g in sub.groupby(["vector", "layer"]):
                g = g.sort_values("scale")
                is_random = vec.startswith("random")
                if is_random and vec != (random_name or vec):
                    continue
                if is_random:
                    ax.fill_between(g.scale, g.ci_low, g.ci_high, color="0.6", alpha=0.35,
                                    label=f"random control (L{layer}, 95% CI)")
                    ax.plot(g.scale, g["mean"], color="0.45", lw=1, ls="--")
                else:
                    line = ax.plot(g.scale, g["mean"], marker="o", label=f"+{vec} (L{layer})")[0]
                    ax.fill_between(g.scale, g.ci_low, g.ci_high, color=line.get_color(),
                                    alpha=0.2)
            ax.axvline(0, color="0.8", lw=0.8)
            paths.append(_save(fig, ax, "steering scale (fraction of median residual norm)", m,
                               f"{task}: {m}", out_dir / f"{task}__{m.replace('.', '_')}.png"))
    return paths


def _save(fig, ax, xlabel: str, ylabel: str, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def report_markdown(cfg, summary: pd.DataFrame, plots: list[Path],
                    by_value: pd.DataFrame | None = None, eff: pd.DataFrame | None = None,
                    extra: list[str] | None = None) -> str:
    st = cfg.steering
    vectors = list(st.vectors) if st else []
    tr = trends(summary, vectors)
    how = (f"steering at layers {st.layers}, scales {st.scales}, positions `{st.positions}`, "
           f"{st.random_controls} random control direction(s)" if st else "no steering")
    lines = [f"# {cfg.name}", "", cfg.description.strip(), "",
             f"Model `{cfg.model.name}`; {how}; seeds {cfg.seeds}.",
             "", "## Trends", "",
             "Spearman rho of each condition mean against scale; `beyond_random_ci`: the "
             "highest-scale mean lies outside the random control's 95% CI at that scale.", ""]
    if not tr.empty:
        lines.append(tr.to_markdown(index=False, floatfmt=".3f") if _has_tabulate()
                     else "```\n" + tr.to_string(index=False) + "\n```")
    if eff is not None and not eff.empty:
        beh = eff[eff.metric.map(is_behaviour)]
        if not beh.empty:
            lines += ["", "## Behaviour: dose-response slopes", "",
                      "Slope of each behaviour metric against scale (per unit of scale, i.e. per "
                      "1.0 x the median residual norm) with a 95% cluster-bootstrap CI over "
                      "items; `diff_top`/`diff_bottom`: difference from the unsteered model at "
                      "the largest / most negative scale, with sign-flip permutation p-values; "
                      "`exceeds_random`: the slope's CI does not overlap the random-direction "
                      "control's.", "", "```",
                      beh.round(4).to_string(index=False), "```"]
    if by_value is not None and not by_value.empty:
        lines += ["", "## Read-outs against the swept value (Spearman rho)", "",
                  "```", by_value.to_string(index=False), "```"]
    lines += extra or []
    lines += ["", "## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    lines += ["", "Full numbers: `summary.csv` (per condition), `results.parquet` (per sample), "
              "`samples.jsonl` (texts).", ""]
    return "\n".join(lines)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False


def value_trends(results: pd.DataFrame, values: dict[str, list]) -> pd.DataFrame:
    """For read-out tasks swept over `values`: Spearman rho of each read-out against the value,
    per task and condition."""
    rows = []
    for task, vals in values.items():
        sub = results[(results.task == task) & results.metric.str.startswith("readout.")]
        for (vec, layer, scale, metric), g in sub.groupby(["vector", "layer", "scale", "metric"]):
            per_item = g.groupby("item")["value"].mean()
            x = [vals[i] for i in per_item.index]
            rows.append(dict(task=task, vector=vec, layer=layer, scale=scale, metric=metric,
                             rho=spearman(x, per_item.to_numpy()),
                             at_lowest=per_item.iloc[0], at_highest=per_item.iloc[-1]))
    return pd.DataFrame(rows)


def value_plots(results: pd.DataFrame, values: dict[str, list], emotions: list[str],
                out_dir: Path) -> list[Path]:
    """Read-out against the swept value (one line per emotion), unsteered condition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for task, vals in values.items():
        sub = results[(results.task == task) & (results.scale == 0)]
        if sub.empty:
            continue
        first = sub.vector.iloc[0]
        sub = sub[sub.vector == first]
        fig, ax = plt.subplots(figsize=(6.5, 4), dpi=110)
        numeric = all(isinstance(v, (int, float)) for v in vals)
        for e in emotions:
            g = sub[sub.metric == f"readout.{e}"].groupby("item")["value"].mean()
            if g.empty:
                continue
            x = [vals[i] for i in g.index] if numeric else list(g.index)
            ax.plot(x, g.to_numpy(), marker="o", label=e)
        if numeric and min(vals) > 0 and max(vals) / min(vals) > 20:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(vals)), [str(v) for v in vals], rotation=30)
        paths.append(_save(fig, ax, "value", "read-out (fraction of median norm)",
                           f"{task}: emotion read-outs against the value",
                           out_dir / f"{task}__readout_by_value.png"))
    return paths
