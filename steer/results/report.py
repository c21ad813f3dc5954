"""Reports for people: the terminal's rich tables and report.md."""

from __future__ import annotations

import pandas as pd
from rich.table import Table
from rich.text import Text

from steer.results.stats import EFFECT, VERDICTS, is_control, verdict_notes, verdict_rule
from steer.results.tables import headline_metrics, is_behaviour, trends, trends_note


def effects_table(eff: pd.DataFrame, metrics: list[str]) -> Table:
    """The slopes of `metrics` (per unit of scale, 95% bootstrap CI), the random control's
    slope and each row's verdict (steer.results.stats.assign_verdicts)."""
    table = Table(title="dose-response slope per unit scale [95% CI], random control, verdict",
                  title_style="bold")
    for col in ("task", "vector", "metric", "slope [95% CI]", "random", "verdict"):
        table.add_column(col, justify="right" if col in ("slope [95% CI]", "random") else "left")
    if eff.empty:
        return table
    for r in eff[eff.metric.isin(metrics) & ~eff.vector.map(is_control)].itertuples():
        rnd = "" if pd.isna(r.random_slope) else f"{r.random_slope:+.3g}"
        table.add_row(r.task, f"{r.vector} (L{r.layer})", r.metric,
                      f"{r.slope:+.3g} [{r.slope_low:+.3g}, {r.slope_high:+.3g}]", rnd,
                      str(r.verdict))
    return table


def terminal_tables(summary: pd.DataFrame, eff: pd.DataFrame, vectors: list[str]
                    ) -> list[Table | Text]:
    """What `steer run` prints at the end: the summary (and a line saying how many values were
    non-finite, if any were), and when steering, the trends and the behaviour metrics' slopes
    with their verdicts, the rule that reached them, and why verdicts are missing if they are.

    Example:
        >>> import pandas as pd
        >>> from steer.results.report import terminal_tables
        >>> s = pd.DataFrame({"task": "t", "vector": "joy", "layer": 2, "metric": "sentiment",
        ...                   "scale": [0.0, 0.2], "mean": 0.5, "ci_low": 0.4, "ci_high": 0.6,
        ...                   "n": 3, "n_nonfinite": 0})
        >>> [str(t) for t in terminal_tables(s, pd.DataFrame(), ["joy"])[1:]]
        ['No trends: the run has 2 scales (0, 0.2); a trend against scale needs 3 or more.']
    """
    tables: list[Table | Text] = [summary_table(summary, vectors)]
    note = nonfinite_note(summary)
    if note:
        tables.append(Text(note, style="yellow"))
    if vectors:
        why = trends_note(summary, vectors)
        tables.append(Text(why) if why else trends_table(summary, vectors, eff))
        beh = [m for m in headline_metrics(summary, vectors) if is_behaviour(m)]
        if not eff.empty and beh:
            tables.append(effects_table(eff, beh))
        if not eff.empty and "m" in eff:
            tables.append(Text(verdict_rule(int(eff.m.iloc[0])).replace("`", ""), style="dim"))
        tables += [Text(line, style="yellow") for line in verdict_notes(eff)]
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


def trends_table(summary: pd.DataFrame, vectors: list[str], eff: pd.DataFrame | None = None
                 ) -> Table:
    """Rho of each headline metric against scale, its lowest- and highest-scale means, and the
    verdict of its effects row."""
    tr = trends(summary, vectors, eff)
    table = Table(title="trend against scale", title_style="bold")
    for col in ("vector", "metric", "rho", "lowest", "highest", "verdict"):
        table.add_column(col, justify="left" if col in ("vector", "metric", "verdict")
                         else "right")
    for r in tr.itertuples():
        table.add_row(f"{r.vector} (L{r.layer})", r.metric, f"{r.rho:+.2f}", f"{r.at_lowest:.3g}",
                      f"{r.at_highest:.3g}", r.verdict)
    return table


def verdict_lines(eff: pd.DataFrame | None) -> list[str]:
    """report.md's verdict section: the rule, the counts by label, why verdicts are missing
    (if they are), and the rows called `effect`.

    Example:
        >>> import pandas as pd
        >>> from steer.results.report import verdict_lines
        >>> eff = pd.DataFrame({"task": "t", "vector": ["joy", "random"], "layer": 2,
        ...                     "metric": "m", "slope": [1.0, 0.0], "slope_low": [0.8, -0.1],
        ...                     "slope_high": [1.2, 0.1], "random_slope": [0.0, None],
        ...                     "n_items": [20, 40], "m": 1, "verdict": ["effect", "control"]})
        >>> verdict_lines(eff)[5]
        'Verdicts of the 1 steered row (task x vector x layer x metric): 1 effect.'
    """
    if eff is None or eff.empty or "verdict" not in eff:
        return []
    tested = eff[~eff.vector.map(is_control)]
    counts = tested.verdict.value_counts()
    m = int(eff.m.iloc[0])
    summary = ", ".join(f"{int(counts[k])} {k}" for k in VERDICTS if counts.get(k, 0))
    lines = ["", "## Verdicts", "", verdict_rule(m), "",
             f"Verdicts of the {len(tested)} steered row{'s' if len(tested) != 1 else ''} "
             f"(task x vector x layer x metric): {summary}."]
    lines += [f"- {n}" for n in verdict_notes(eff)]
    hits = tested[tested.verdict == EFFECT]
    if not hits.empty:
        lines += ["", "Rows called `effect`:", "", _markdown(_slopes(hits.head(40)))]
        if len(hits) > 40:
            lines.append(f"({len(hits) - 40} more in effects.csv)")
    return lines


def _slopes(eff: pd.DataFrame) -> pd.DataFrame:
    """Slope [95% CI], the random control's slope and the verdict, one row per effects row."""
    return pd.DataFrame({
        "task": eff.task, "vector": eff.vector, "layer": eff.layer, "metric": eff.metric,
        "n": eff.n_items,
        "slope [95% CI]": [f"{r.slope:+.3g} [{r.slope_low:+.3g}, {r.slope_high:+.3g}]"
                           for r in eff.itertuples()],
        "random slope": [("" if pd.isna(x) else f"{x:+.3g}") for x in eff.random_slope],
        "verdict": eff.verdict})


def _markdown(frame: pd.DataFrame) -> str:
    return (frame.to_markdown(index=False, floatfmt=".3f") if _has_tabulate()
            else "```\n" + frame.to_string(index=False) + "\n```")


def report_markdown(cfg, summary: pd.DataFrame, plots: list[str],
                    eff: pd.DataFrame | None = None, extra: list[str] | None = None) -> str:
    """report.md: the question, trends, verdicts, behaviour slopes, each task's own sections,
    plots."""
    st = cfg.steering
    vectors = list(st.vectors) if st else []
    tr = trends(summary, vectors, eff)
    how = (f"steering at layers {st.layers}, scales {st.scales}, positions `{st.positions}`, "
           f"{st.random_controls} random control direction(s)" if st else "no steering")
    note = nonfinite_note(summary)
    lines = [f"# {cfg.name}", "", cfg.description.strip(), "",
             f"Model `{cfg.model.name}`; {how}; seeds {cfg.seeds}.",
             *(["", f"**Non-finite values**: {note}."] if note else []),
             "", "## Trends", "",
             "Spearman rho of each condition mean against scale, the means at the lowest and "
             "highest scale, and the verdict of the metric's slope (see Verdicts).", ""]
    if not tr.empty:
        lines.append(_markdown(tr))
    elif vectors:
        lines.append(trends_note(summary, vectors) or "")
    lines += verdict_lines(eff)
    if eff is not None and not eff.empty:
        beh = eff[eff.metric.map(is_behaviour) & ~eff.vector.map(is_control)]
        if not beh.empty:
            lines += ["", "## Behaviour: dose-response slopes", "",
                      "Slope of each behaviour metric against scale (per unit of scale, i.e. per "
                      "1.0 x the median residual norm) with a 95% cluster-bootstrap CI over "
                      "items, the pooled random-direction control's slope, and the verdict. "
                      "effects.csv also holds the Bonferroni-adjusted intervals behind the "
                      "verdict and the difference from the unsteered model at the extreme "
                      "scales (`diff_top`/`diff_bottom`, sign-flip permutation p-values).", "",
                      _markdown(_slopes(beh))]
    lines += extra or []
    lines += ["", "## Plots", ""] + [f"![{p.removesuffix('.png')}](plots/{p})" for p in plots]
    lines += ["", "Full numbers: `summary.csv` (per condition), `effects.csv` (slopes and "
              "verdicts), `results.parquet` (per sample), `samples.jsonl` (texts).", ""]
    return "\n".join(lines)


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401

        return True
    except ImportError:
        return False
