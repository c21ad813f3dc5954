"""Reports for people: the terminal's rich tables and report.md."""

from __future__ import annotations

import pandas as pd
from rich.table import Table
from rich.text import Text

from steer.results.tables import headline_metrics, is_behaviour, trends


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


def terminal_tables(summary: pd.DataFrame, eff: pd.DataFrame, vectors: list[str]
                    ) -> list[Table | Text]:
    """What `steer run` prints at the end: the summary (and a line saying how many values were
    non-finite, if any were), and when steering, the trends and the behaviour metrics' slopes
    against the random control."""
    tables: list[Table | Text] = [summary_table(summary, vectors)]
    note = nonfinite_note(summary)
    if note:
        tables.append(Text(note, style="yellow"))
    if vectors:
        tables.append(trends_table(summary, vectors))
        beh = [m for m in headline_metrics(summary, vectors) if is_behaviour(m)]
        if not eff.empty and beh:
            tables.append(effects_table(eff, beh))
    return tables


def nonfinite_note(summary: pd.DataFrame) -> str | None:
    """One line saying how many values were NaN/inf and left out of the means, or None when
    there were none. Counted from the summary's `n_nonfinite`, each value once: the unsteered
    model (repeated at scale 0 under every vector and layer) once per task and metric, and
    the pooled random control not again.

    Example:
        >>> import pandas as pd
        >>> from steer.results.report import nonfinite_note
        >>> s = pd.DataFrame({"task": ["t"] * 3, "vector": ["calm", "joy", "calm"],
        ...                   "layer": [2, 2, 2], "scale": [0.0, 0.0, 9.0],
        ...                   "metric": ["m"] * 3, "n_nonfinite": [1, 1, 3]})
        >>> nonfinite_note(s).split(" (")[0]
        '4 values were NaN/inf in 2 conditions and left out of the means'
        >>> nonfinite_note(s.assign(n_nonfinite=0)) is None
        True
    """
    if "n_nonfinite" not in summary or not (summary["n_nonfinite"] > 0).any():
        return None
    rows = summary[(summary.n_nonfinite > 0) & (summary.vector != "random")]
    steered, base = rows[rows.scale != 0], rows[rows.scale == 0]
    base = base.drop_duplicates(["task", "metric"])  # one unsteered model per task
    count = int(steered.n_nonfinite.sum() + base.n_nonfinite.sum())
    conditions = (steered[["task", "vector", "layer", "scale"]].drop_duplicates().shape[0]
                  + base.task.nunique())
    return (f"{count} value{'s were' if count != 1 else ' was'} NaN/inf in {conditions} "
            f"condition{'s' if conditions != 1 else ''} and left out of the means (n_nonfinite "
            "in summary.csv; samples flagged nonfinite in samples.jsonl)")


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


def report_markdown(cfg, summary: pd.DataFrame, plots: list[str],
                    eff: pd.DataFrame | None = None, extra: list[str] | None = None) -> str:
    """report.md: the question, trends, behaviour slopes, each task's own sections, plots."""
    st = cfg.steering
    vectors = list(st.vectors) if st else []
    tr = trends(summary, vectors)
    how = (f"steering at layers {st.layers}, scales {st.scales}, positions `{st.positions}`, "
           f"{st.random_controls} random control direction(s)" if st else "no steering")
    note = nonfinite_note(summary)
    lines = [f"# {cfg.name}", "", cfg.description.strip(), "",
             f"Model `{cfg.model.name}`; {how}; seeds {cfg.seeds}.",
             *(["", f"**Non-finite values**: {note}."] if note else []),
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
    lines += extra or []
    lines += ["", "## Plots", ""] + [f"![{p.removesuffix('.png')}](plots/{p})" for p in plots]
    lines += ["", "Full numbers: `summary.csv` (per condition), `results.parquet` (per sample), "
              "`samples.jsonl` (texts).", ""]
    return "\n".join(lines)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False
