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


def headline_metrics(summary: pd.DataFrame, vectors: list[str]) -> list[str]:
    present = set(summary.metric)
    ro = [f"readout.{e}" for e in _steered_emotions(vectors) if f"readout.{e}" in present]
    return ro + [m for m in PLAIN_METRICS if m in present]


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
            ax.set_xlabel("steering scale (fraction of median residual norm)")
            ax.set_ylabel(m)
            ax.set_title(f"{task}: {m}")
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = out_dir / f"{task}__{m.replace('.', '_')}.png"
            fig.savefig(path)
            plt.close(fig)
            paths.append(path)
    return paths


def report_markdown(cfg, summary: pd.DataFrame, plots: list[Path]) -> str:
    vectors = list(cfg.steering.vectors)
    tr = trends(summary, vectors)
    lines = [f"# {cfg.name}", "", cfg.description.strip(), "",
             f"Model `{cfg.model.name}`; steering at layers {cfg.steering.layers}, "
             f"scales {cfg.steering.scales}, positions `{cfg.steering.positions}`, "
             f"{cfg.steering.random_controls} random control direction(s); seeds {cfg.seeds}.",
             "", "## Trends", "",
             "Spearman rho of each condition mean against scale; `beyond_random_ci`: the "
             "highest-scale mean lies outside the random control's 95% CI at that scale.", ""]
    if not tr.empty:
        lines.append(tr.to_markdown(index=False, floatfmt=".3f") if _has_tabulate()
                     else "```\n" + tr.to_string(index=False) + "\n```")
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
