"""`generate`: the model replies to each prompt under each condition, and the unsteered model
re-reads every reply.

Metrics per reply (those named in the config's `metrics`): `readout.<emotion>` (the mean
projection of the re-read reply's residual activations at the read-out layer on each unit
vector, in units of the median norm), `sentiment` (VADER compound), `perplexity` of the reply
given the prompt, and `repetition` (share of repeated token 3-grams).

A reply cut short by non-finite logits (an exploding condition) is not a reply of that
condition: its sample keeps the text so far, is flagged `nonfinite`, and every metric is NaN.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from steer.tasks.base import Condition, Context, Sample
from steer.tasks.items import PromptTask


class GenerateSpec(PromptTask):
    """Free replies to prompts, scored."""

    type: Literal["generate"] = "generate"

    def decode_work(self, max_new_tokens: int) -> tuple[int, int]:
        return 1, max_new_tokens

    def run(self, ctx: Context, conditions: list[Condition], seed: int) -> list[Sample]:
        from steer.lm.decode import generate_rows
        from steer.lm.read import score
        from steer.tasks.metrics import repetition, sentiment

        model = ctx.model
        keys, rows = self.rows(ctx, conditions, seed)
        gens = generate_rows(model, rows, ctx.vectors,
                             dataclasses.replace(ctx.sampling, stop_ids=[]), ctx.batch_size)
        scores = [None] * len(gens)
        if {"readout", "perplexity"} & set(ctx.metrics):
            # a cut reply is not re-read (an empty completion scores NaN without a pass), so
            # the other rows' re-read batches are exactly those of a run without it
            scores = score(model, [(x.prompt_ids, [] if x.nonfinite else x.ids) for x in gens],
                           ctx.vectors,
                           ctx.readout_layer,
                           ctx.emotions if "readout" in ctx.metrics else (), ctx.batch_size)
        out = []
        for (item, cond), gen, sc in zip(keys, gens, scores):
            metrics: dict[str, float] = {}
            if "readout" in ctx.metrics and sc is not None:
                metrics.update({f"readout.{e}": v for e, v in sc.readout.items()})
            if "sentiment" in ctx.metrics:
                metrics["sentiment"] = sentiment(gen.text)
            if "perplexity" in ctx.metrics and sc is not None:
                metrics["perplexity"] = sc.perplexity
            if "repetition" in ctx.metrics:
                metrics["repetition"] = repetition(gen.ids)
            if gen.nonfinite:
                metrics = dict.fromkeys(metrics, math.nan)
            out.append(Sample(item, seed, cond, metrics,
                              {"text": gen.text, "n_tokens": len(gen.ids),
                               "stopped": gen.stopped}, nonfinite=gen.nonfinite))
        return out
