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


PROMPTED = "prompt:"  # instructed conditions' vector names (steer.tasks.base.PROMPTED)


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
            lo_x, hi_x = float(sub.scale.min()), float(sub.scale.max())
            for (vec, layer), g in sub.groupby(["vector", "layer"]):
                g = g.sort_values("scale")
                is_random = vec.startswith("random")
                if vec.startswith(PROMPTED):  # the prompting baseline: a level, not a curve
                    r = g.iloc[0]
                    line = ax.axhline(r["mean"], ls=":", lw=1.2,
                                      label=f"instructed {vec[len(PROMPTED):]} (95% CI)")
                    ax.fill_between([lo_x, hi_x], r.ci_low, r.ci_high, alpha=0.12,
                                    color=line.get_color())
                    continue
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


def calibration_plot(table: pd.DataFrame, recommendation: dict | None = None) -> Figure:
    """A calibration (steer.sweep.calibrate) as heatmaps, one per vector (the random controls
    last): layers x signed scales, coloured by the perplexity ratio of the replies (steered /
    unsteered, log scale), each cell labelled with it; hatched cells are not fluent, and stars
    mark the recommended layer at +-scale.

    Example:
        >>> import pandas as pd
        >>> t = pd.DataFrame([(L, s, v, 1 + abs(s), abs(s) < 0.3) for L in (8, 12)
        ...                   for s in (-0.4, -0.2, 0.2, 0.4) for v in ("calm", "random-0")],
        ...                  columns=["layer", "scale", "vector", "ppl_ratio", "fluent"])
        >>> fig = calibration_plot(t, {"layer": 12, "scale": 0.2})
        >>> [ax.get_title() for ax in fig.axes[:2]]
        ['+calm', 'random-0 (control)']
    """
    import numpy as np
    from matplotlib.colors import LogNorm
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    vectors = list(dict.fromkeys(table.vector))
    vectors.sort(key=lambda v: v.startswith("random"))  # stable: the controls go last
    layers = sorted(set(table.layer))
    scales = sorted(set(table.scale))
    ratios = table.ppl_ratio.to_numpy(dtype=float)
    top = float(np.nanmax(ratios)) if np.isfinite(ratios).any() else 1.0
    norm = LogNorm(vmin=0.8, vmax=max(3.0, top))
    size = (2.5 + 0.6 * len(scales), 0.8 + len(vectors) * (1 + 0.4 * len(layers)))
    fig, axes = plt.subplots(len(vectors), 1, figsize=size, dpi=110, squeeze=False,
                             layout="constrained")
    axes = axes[:, 0]
    rec = recommendation or {}
    for ax, vec in zip(axes, vectors):
        sub = table[table.vector == vec].set_index(["layer", "scale"])
        grid = np.full((len(layers), len(scales)), np.nan)
        for (L, s), row in sub.iterrows():
            i, j = layers.index(L), scales.index(s)
            grid[i, j] = row.ppl_ratio
            ax.text(j, i, f"{row.ppl_ratio:.2f}", ha="center", va="center", fontsize=7)
            if not bool(row.fluent):
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///",
                                       edgecolor="0.25", lw=0))
        im = ax.imshow(np.clip(grid, norm.vmin, None), cmap="YlOrRd", norm=norm, aspect="auto")
        if rec.get("layer") in layers and not vec.startswith("random"):
            for s in (-rec["scale"], rec["scale"]):
                if s in scales:
                    ax.plot(scales.index(s) + 0.3, layers.index(rec["layer"]) - 0.25,
                            marker="*", ms=11, color="tab:blue", markeredgecolor="white",
                            ls="none")
        ax.set_xticks(range(len(scales)), [f"{s:g}" for s in scales], rotation=45, fontsize=8)
        ax.set_yticks(range(len(layers)), [str(L) for L in layers])
        ax.set_xlabel("scale (fraction of the median residual norm)", fontsize=8)
        ax.set_ylabel("layer")
        ax.set_title(f"{vec} (control)" if vec.startswith("random") else f"+{vec}")
    bar = fig.colorbar(im, ax=list(axes), label="perplexity ratio (steered / unsteered)")
    ticks = [t for t in (0.8, 1, 1.5, 2, 3, 10, 100, 1000) if t <= norm.vmax]
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    bar.minorticks_off()
    star = (f"; star: recommended (layer {rec['layer']}, scale +-{rec['scale']:g})"
            if rec.get("layer") is not None else "; no fluent scale found")
    fig.suptitle("Calibration: hatched = not fluent" + star, fontsize=9)
    return fig
