"""`generate`: the model replies to each prompt under each condition, and the unsteered model
re-reads every reply.

Metrics per reply (those named in the config's `metrics`): `readout.<emotion>` (the mean
projection of the re-read reply's residual activations at the read-out layer on each unit
vector, in units of the median norm), `sentiment` (VADER compound), `perplexity` of the reply
given the prompt, and `repetition` (share of repeated token 3-grams).

An instructed condition's reply (the prompting baseline) is re-read after the run's own system
prompt, without the instruction: its read-outs and perplexity then measure the reply, not the
instruction sitting in its context, exactly as a steered reply's do.

A reply cut short by non-finite logits (an exploding condition) is not a reply of that
condition: its sample keeps the text so far, is flagged `nonfinite`, and every metric is NaN.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

from steer.tasks.base import Condition, Context, Sample
from steer.tasks.items import PromptTask


def reread_ids(ctx: Context, user: str | list[dict], cond: Condition, prompt_ids: list[int]
               ) -> list[int]:
    """The prompt a reply is re-read after: its own, except for an instructed condition, whose
    reply is re-read after the prompt without the instruction (the run's system prompt).
    `user`: the user's message, or a whole conversation (a list of messages)."""
    if not cond.is_prompted:
        return prompt_ids
    messages = [{"role": "user", "content": user}] if isinstance(user, str) else user
    text = ctx.model.format_messages(messages, ctx.system_prompt)
    ids, _ = ctx.model.encode([text])
    return ids[0].tolist()


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
            reread = [reread_ids(ctx, self.items()[item], cond, x.prompt_ids)
                      for (item, cond), x in zip(keys, gens)]
            scores = score(model, [(p, [] if x.nonfinite else x.ids) for p, x in zip(reread, gens)],
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
