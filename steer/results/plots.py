"""Figures: dose-response curves with CI bands and the random-control band, read-outs against a
swept value, and token-by-token read-out heatmaps. Functions return matplotlib figures; whoever
owns the destination saves them (`steer.io.save_figure`, or the run directory's
`write_plot`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from steer.results.tables import headline_metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def dose_response_plots(summary: pd.DataFrame, vectors: list[str]) -> list[tuple[str, Figure]]:
    """One figure per (task, headline metric), named `<task>__<metric>.png`: mean vs scale per
    vector with CI bands, and the random-direction control as a grey band."""
    plt = _pyplot()
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
            _label(ax, "steering scale (fraction of median residual norm)", m, f"{task}: {m}")
            paths.append((f"{task}__{m.replace('.', '_')}.png", fig))
    return paths


def _label(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()


def value_plot(results: pd.DataFrame, task: str, vals: list, emotions: list[str]
               ) -> Figure | None:
    """Read-out against the swept value `vals` (one line per emotion), unsteered condition;
    None when the task has no unsteered rows."""
    sub = results[(results.task == task) & (results.scale == 0)]
    if sub.empty:
        return None
    sub = sub[sub.vector == sub.vector.iloc[0]]
    fig, ax = _pyplot().subplots(figsize=(6.5, 4), dpi=110)
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
    _label(ax, "value", "read-out (fraction of median norm)",
           f"{task}: emotion read-outs against the value")
    return fig


def trace_heatmap(trace: pd.DataFrame, title: str) -> Figure:
    """Emotions (rows) token by token (columns) from `steer.trace`'s table."""
    import numpy as np

    plt = _pyplot()

    values = trace.drop(columns="token").to_numpy().T
    width = min(40, 2 + 0.22 * values.shape[1])
    fig, ax = plt.subplots(figsize=(width, 1 + 0.35 * values.shape[0]), dpi=110)
    lim = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    im = ax.imshow(values, aspect="auto", cmap="coolwarm", vmin=-lim, vmax=lim)
    ax.set_yticks(range(values.shape[0]), list(trace.columns[1:]), fontsize=8)
    ax.set_xticks(range(len(trace)), [t.replace("\n", "\\n") for t in trace.token],
                  rotation=90, fontsize=6)
    fig.colorbar(im, ax=ax, label="read-out (fraction of median norm)")
    ax.set_title(title)
    fig.tight_layout()
    return fig
