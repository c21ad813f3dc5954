"""`readout`: the model only reads each prompt (no generation); its emotion read-outs over the
user's message are recorded under each condition. With a `template` and `values` (e.g. a stated
dose), each sample keeps its value, and the report correlates read-outs with it."""

from __future__ import annotations

from typing import ClassVar, Literal

from steer.tasks.base import Condition, Context, Extra, Sample
from steer.tasks.items import PromptTask


class ReadoutSpec(PromptTask):
    """Emotion read-outs of prompts."""

    type: Literal["readout"] = "readout"
    deterministic: ClassVar[bool] = True

    def run(self, ctx: Context, conditions: list[Condition], seed: int) -> list[Sample]:
        from steer.lm.read import readout_prompts

        model = ctx.model
        keys, rows = self.rows(ctx, conditions, seed)
        prompts = self.items()
        skip = [model.user_offset(prompts[item], ctx.system_prompt_for(cond))
                for item, cond in keys]
        reads = readout_prompts(model, rows, skip, ctx.vectors, ctx.readout_layer, ctx.emotions,
                                ctx.batch_size)
        values = self.values if self.values else None
        return [Sample(item, seed, cond, {f"readout.{e}": v for e, v in ro.items()},
                       {"value": values[item]} if values else {})
                for (item, cond), ro in zip(keys, reads)]

    def extra(self, samples: list[Sample], results, emotions: list[str]) -> Extra:
        """With swept `values`: the read-outs' Spearman rho against the value per condition, and
        a plot of the unsteered read-outs against it."""
        if not self.values:
            return Extra()
        from steer.results.plots import value_plot

        trend = value_trends(results, self.name, self.values)
        lines = []
        if not trend.empty:
            lines = ["", "## Read-outs against the swept value (Spearman rho)", "",
                     "```", trend.to_string(index=False), "```"]
        fig = value_plot(results, self.name, self.values, emotions)
        return Extra(report=lines,
                     plots={} if fig is None else {f"{self.name}__readout_by_value.png": fig})


def value_trends(results, task: str, vals: list):
    """Spearman rho of each read-out of `task` against the swept value, per condition."""
    import pandas as pd

    from steer.results.stats import spearman

    sub = results[(results.task == task) & results.metric.str.startswith("readout.")]
    rows = []
    for (vec, layer, scale, metric), g in sub.groupby(["vector", "layer", "scale", "metric"]):
        per_item = g.groupby("item")["value"].mean()
        x = [vals[i] for i in per_item.index]
        rows.append(dict(task=task, vector=vec, layer=layer, scale=scale, metric=metric,
                         rho=spearman(x, per_item.to_numpy()),
                         at_lowest=per_item.iloc[0], at_highest=per_item.iloc[-1]))
    return pd.DataFrame(rows)
