"""Steering against the prompting baseline: for each emotion instructed in the system prompt
(`steering.prompt_controls`) and steered into the residual stream, the two effects side by side.

Every effect here is a difference from the unsteered model, paired by item (seeds of an item
averaged first): steering's at each scale, the instructed condition's, and the random control's
at the same layer and scale, each with a 95% bootstrap CI over items (for the random control,
over item x direction units). `relation` compares steering with instructing on the same items:
the CI of their per-item difference (steering minus instructed) lies above zero (`larger`:
steering moved the metric further up than the instruction did), below it (`smaller`), or
contains it (`within`: the two cannot be told apart on these items). Signed, as the metric is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from steer.results.stats import bootstrap_ci

PROMPTED = "prompt:"  # instructed conditions' vector names (steer.tasks.base.PROMPTED)
COLUMNS = ["task", "metric", "emotion", "layer", "scale", "steered", "steered_low",
           "steered_high", "instructed", "instructed_low", "instructed_high", "random",
           "random_low", "random_high", "steered_minus_instructed", "smi_low", "smi_high",
           "relation", "n_items"]


def _per_item(df: pd.DataFrame) -> pd.Series:
    """Mean value per (metric, item) over seeds."""
    return df.groupby(["metric", "item"], sort=True)["value"].mean()


def _ci(values) -> tuple[float, float, float]:
    v = np.asarray(values, dtype=float)
    return bootstrap_ci(v[np.isfinite(v)])


def instructed_comparison(results: pd.DataFrame, metrics: list[str] | None = None,
                          n_boot: int = 2000) -> pd.DataFrame:
    """One row per (task, metric, emotion, layer, scale): the effect of steering toward the
    emotion at that scale, of instructing it (`prompt:<emotion>`), and of the random control at
    the same layer and scale, each minus the unsteered model, with 95% CIs; and `relation`
    (larger / smaller / within, see the module docstring). Empty without instructed conditions.

    Example:
        >>> import pandas as pd
        >>> rows = []
        >>> for item in range(8):
        ...     for vec, layer, scale, v in [("calm", 2, 0.0, 0.0), ("calm", 2, 0.2, 1.0),
        ...                                  ("prompt:calm", -1, 0.0, 0.5),
        ...                                  ("random-0", 2, 0.2, 0.1 * (item % 2))]:
        ...         rows.append(dict(task="t", item=item, vector=vec, layer=layer, scale=scale,
        ...                          seed=0, metric="m", value=v + 0.01 * item))
        >>> out = instructed_comparison(pd.DataFrame(rows))
        >>> out[["emotion", "scale", "steered", "instructed", "relation"]].round(2).values.tolist()
        [['calm', 0.2, 1.0, 0.5, 'larger']]
    """
    ok = np.isfinite(pd.to_numeric(results["value"], errors="coerce").to_numpy(dtype=float))
    df = results[ok]
    if metrics is not None:
        df = df[df.metric.isin(metrics)]
    prompted = sorted(v for v in df.vector.dropna().unique() if str(v).startswith(PROMPTED))
    rows = []
    for task, t in df.groupby("task", sort=True):
        base_rows = t[(t.scale == 0) & ~t.vector.str.startswith(PROMPTED)]
        if base_rows.empty:
            continue
        # the unsteered model is repeated under every vector and layer at scale 0: take one copy
        first = base_rows.vector.iloc[0], base_rows.layer.iloc[0]
        base = _per_item(base_rows[(base_rows.vector == first[0])
                                   & (base_rows.layer == first[1])])
        for pv in prompted:
            emotion = pv[len(PROMPTED):]
            inst = _per_item(t[t.vector == pv])
            steered = t[(t.vector == emotion) & (t.scale != 0)]
            for (layer, scale), s in steered.groupby(["layer", "scale"], sort=True):
                sv = _per_item(s)
                rnd = t[t.vector.str.startswith("random-") & (t.layer == layer)
                        & (t.scale == scale)]
                for metric in sorted(set(sv.index.get_level_values(0))):
                    if metric not in base.index.get_level_values(0) or \
                            metric not in inst.index.get_level_values(0):
                        continue
                    b, i, st = base[metric], inst[metric], sv[metric]
                    items = b.index.intersection(i.index).intersection(st.index)
                    if len(items) == 0:
                        continue
                    d_s = (st[items] - b[items]).to_numpy()
                    d_i = (i[items] - b[items]).to_numpy()
                    s_mean, s_lo, s_hi = _ci(d_s)
                    i_mean, i_lo, i_hi = _ci(d_i)
                    m_mean, m_lo, m_hi = _ci(d_s - d_i)
                    r = rnd[rnd.metric == metric]
                    if r.empty:
                        r_mean = r_lo = r_hi = float("nan")
                    else:
                        per = r.groupby(["vector", "item"])["value"].mean().reset_index()
                        per = per[per.item.isin(b.index)]
                        r_mean, r_lo, r_hi = _ci(per.value.to_numpy()
                                                 - b[per.item].to_numpy())
                    relation = ("larger" if m_lo > 0 else "smaller" if m_hi < 0 else "within")
                    if len(items) < 2:
                        relation = "too few items"
                    rows.append([task, metric, emotion, int(layer), float(scale), s_mean,
                                 s_lo, s_hi, i_mean, i_lo, i_hi, r_mean, r_lo, r_hi, m_mean,
                                 m_lo, m_hi, relation, len(items)])
    return pd.DataFrame(rows, columns=COLUMNS)


def comparison_lines(table: pd.DataFrame, metrics: list[str] | None = None) -> list[str]:
    """report.md lines for the comparison: one line per (task, metric, emotion, scale).

    Example:
        >>> t = pd.DataFrame([dict(task="t", metric="m", emotion="calm", layer=2, scale=0.2,
        ...     steered=1.0, steered_low=0.9, steered_high=1.1, instructed=0.5,
        ...     instructed_low=0.4, instructed_high=0.6, random=0.0, random_low=-0.1,
        ...     random_high=0.1, steered_minus_instructed=0.5, smi_low=0.4, smi_high=0.6,
        ...     relation="larger", n_items=8)])
        >>> comparison_lines(t)[-1].split(" | ")[2:5]
        ['+calm L2 @+0.2', '+1 [+0.9, +1.1]', '+0.5 [+0.4, +0.6]']
    """
    if table.empty:
        return []
    if metrics is not None:
        table = table[table.metric.isin(metrics)]

    def ci(m, lo, hi):
        return "" if pd.isna(m) else f"{m:+.3g} [{lo:+.3g}, {hi:+.3g}]"

    lines = ["| task | metric | steering | steered - unsteered | instructed - unsteered | "
             "random - unsteered | steering vs instructed |",
             "|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(f"| {r.task} | {r.metric} | +{r.emotion} L{r.layer} @{r.scale:+.3g} | "
                     f"{ci(r.steered, r.steered_low, r.steered_high)} | "
                     f"{ci(r.instructed, r.instructed_low, r.instructed_high)} | "
                     f"{ci(r.random, r.random_low, r.random_high)} | {r.relation} |")
    return lines
