"""The paper's preference experiment: which of two activities would the model rather do?

Every pair of activities (or, with `pairs: k`, a fixed design in which each activity meets
about k others) is asked in both orders as an A/B question with "I prefer (" prefilled; the
probability of preferring each activity is the letters' normalized probability averaged over
the two orders. A Bradley-Terry model fitted to these soft outcomes gives each activity an Elo
rating (mean 1000) per condition; `elo.<group>` is recorded per activity, so the summary holds
each group's mean Elo and its shift under steering. The unsteered ratings are also correlated
with every emotion's read-out over the activity's text.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import ClassVar, Literal

import numpy as np
from pydantic import field_validator

from steer.results.competence import flagged, mean_of, order_verdict, share
from steer.tasks.base import UNSTEERED, Competence, Condition, Context, Extra, Sample, row_seed
from steer.tasks.choice import label_ids, render
from steer.tasks.items import ACTIVITIES, Activity, SuiteTask, load_activities

QUESTION = "Which of these two activities would you rather do?"


def design(n: int, pairs: str | int, seed: int = 0) -> list[tuple[int, int]]:
    """All pairs, or a circulant design over a seeded shuffle: each activity meets its next
    ceil(k/2) neighbours on both sides, so it faces about k opponents and the graph is
    connected."""
    if pairs == "all" or int(pairs) >= n - 1:
        return list(combinations(range(n), 2))
    perm = np.random.default_rng(row_seed("preference-design", seed)).permutation(n)
    out = set()
    for a in range(n):
        for d in range(1, math.ceil(int(pairs) / 2) + 1):
            i, j = int(perm[a]), int(perm[(a + d) % n])
            out.add((min(i, j), max(i, j)))
    return sorted(out)


def bradley_terry(n: int, pairs: list[tuple[int, int]], p_first: list[float],
                  iters: int = 2000, tol: float = 1e-10) -> np.ndarray:
    """Elo ratings (mean 1000) from soft pairwise outcomes by the MM algorithm: p_first[k] is
    the probability that pairs[k][0] is preferred. Each activity gets half a virtual win and
    loss against a mean opponent, which keeps ratings finite."""
    wins = np.full(n, 0.5)
    games = np.zeros((n, n))
    for (i, j), p in zip(pairs, p_first):
        wins[i] += p
        wins[j] += 1 - p
        games[i, j] += 1
        games[j, i] += 1
    pi = np.ones(n)
    for _ in range(iters):
        denom = (games / (pi[:, None] + pi[None, :])).sum(1) + 1.0 / (pi + 1.0)
        new = wins / denom
        new /= np.exp(np.log(new).mean())
        if np.max(np.abs(np.log(new) - np.log(pi))) < tol:
            pi = new
            break
        pi = new
    logs = np.log(pi)
    return 1000 + 400 / math.log(10) * (logs - logs.mean())


def _p_first(lp_a: float, lp_b: float) -> float:
    """P(A) normalized over the two letters; NaN when either log-probability is NaN, and no
    OverflowError (which would fail every condition of the unit) when B is far likelier."""
    d = lp_b - lp_a
    return 0.0 if d > 700 else 1 / (1 + math.exp(d))


class PreferenceSpec(SuiteTask):
    """Pairs of activities, "I prefer (" prefilled; Elo per activity. `pairs`: all, or about
    that many opponents per activity."""

    type: Literal["preference"] = "preference"
    stem: str = "I prefer ("
    pairs: Literal["all"] | int = "all"

    deterministic: ClassVar[bool] = True
    suites: ClassVar[tuple[str, ...]] = (ACTIVITIES,)

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("'all' or a number of opponents per activity >= 1")
        return v

    def load(self, source: str, limit: int | None) -> list[Activity]:
        return load_activities(source, limit)

    def items(self) -> list[str]:
        return [a.text for a in self.loaded()]

    def rows_per_condition(self) -> int:
        n = len(self.loaded())
        k = (n - 1) / 2 if self.pairs == "all" else self.pairs
        return max(1, int(2 * n * k))

    def run(self, ctx: Context, conditions: list[Condition], seed: int) -> list[Sample]:
        from steer import progress
        from steer.lm.decode import GenRow
        from steer.lm.read import next_token_logprobs, readout_prompts

        model = ctx.model
        acts = self.loaded()
        pairs = design(len(acts), self.pairs, ctx.design_seed)
        letters = label_ids(model.tokenizer, self.stem, 2)
        rows, keys = [], []
        for k, (i, j) in enumerate(pairs):
            for flipped in (False, True):
                a, b = (acts[j], acts[i]) if flipped else (acts[i], acts[j])
                question = render(QUESTION, [a.text, b.text])
                for cond in conditions:
                    prompt = model.format_prompt(question, ctx.system_prompt_for(cond))
                    rows.append(GenRow(prompt + self.stem, ctx.interventions(cond, seed)))
                    keys.append((k, flipped, cond))
        with progress.task(self.name, len(rows), ctx.quiet) as adv:
            lps = next_token_logprobs(model, rows, [letters] * len(rows), ctx.vectors,
                                      ctx.batch_size, adv)
        p_first: dict = {}
        shown: dict = {}  # unsteered: (pair, flipped) -> (P(pair's first activity), letter mass)
        for (k, flipped, cond), lp in zip(keys, lps):
            pa = _p_first(lp[0], lp[1])
            p_first.setdefault(cond, [0.0] * len(pairs))[k] += (1 - pa if flipped else pa) / 2
            if cond.is_unsteered:
                shown[(k, flipped)] = (1 - pa if flipped else pa, math.exp(lp[0]) + math.exp(lp[1]))
        # read-outs of each activity's text by the unsteered model, for the Elo correlation
        reads = []
        if UNSTEERED in conditions:  # only the unsteered model's samples carry them
            texts = [GenRow(model.format_prompt(a.text, ctx.system_prompt)) for a in acts]
            skip = [model.user_offset(a.text, ctx.system_prompt) for a in acts]
            reads = readout_prompts(model, texts, skip, ctx.vectors, ctx.readout_layer,
                                    list(ctx.vectors.names), ctx.batch_size)
        out = []
        for cond, ps in p_first.items():
            elo = bradley_terry(len(acts), pairs, ps)
            for i, a in enumerate(acts):
                extra = {"activity": a.text, "group": a.group, "elo": round(float(elo[i]), 2)}
                if cond.is_unsteered:
                    extra["readout"] = {e: round(v, 5) for e, v in reads[i].items()}
                    # each pair, with the activity first in it: [other, P(this) shown first,
                    # P(this) shown second, mean letter mass], for the competence check
                    extra["pairs"] = [
                        [j, round(shown[(k, False)][0], 4), round(shown[(k, True)][0], 4),
                         round((shown[(k, False)][1] + shown[(k, True)][1]) / 2, 4)]
                        for k, (a, j) in enumerate(pairs) if a == i]
                out.append(Sample(i, seed, cond, {f"elo.{a.group}": float(elo[i])}, extra))
        return out

    def competence(self, samples: list[Sample]) -> Competence | None:
        """Does the unsteered model prefer activities by what they are? `order_agreement`: the
        share of pairs whose preferred activity is the same in both orders (~0 when it follows
        the letter, ~1/2 for a coin flip); `option_mass`: the letters' next-token mass;
        `first_position`: the share of it on (A); `margin`: mean |P(A) - P(B)|. The rule is
        the choice task's (`steer.results.competence.order_verdict`): at chance unless
        agreement's Wilson CI lies above 1/2; not answering in the format when the letters
        hold under half the mass.
        None for samples written before pairs were kept."""
        base = [s for s in samples if s.cond.is_unsteered and "pairs" in s.extra]
        pairs = [p for s in base for p in s.extra["pairs"]
                 if not any(math.isnan(x) for x in p[1:])]
        if not pairs:
            return None
        shown_a = [x for _, p_a, p_b, _ in pairs for x in (p_a, 1 - p_b)]  # P(letter A)
        agree = sum((p_a > 0.5) == (p_b > 0.5) for _, p_a, p_b, _ in pairs)
        checks = {"order_agreement": share(agree, len(pairs)),
                  "option_mass": mean_of(m for *_, m in pairs),
                  "first_position": mean_of(shown_a),
                  "margin": mean_of(abs(2 * p - 1) for p in shown_a)}
        at, reason = order_verdict(checks["order_agreement"], 0.5, checks["option_mass"],
                                   checks["first_position"], "pairs", margin=checks["margin"])
        return Competence(self.name, checks, at, flagged(reason) if at else reason)

    def extra(self, samples: list[Sample], results, emotions: list[str]) -> Extra:
        """elo_<task>.csv (every activity's Elo per condition) and elo_readout_<task>.csv
        (Pearson r of the unsteered Elo with each emotion's read-out over the activity
        texts), and a report section."""
        import pandas as pd

        rows = []
        for o in samples:
            c = o.cond
            rows.append(dict(task=self.name, item=o.item, activity=o.extra["activity"],
                             group=o.extra["group"], vector=c.vector, layer=c.layer, scale=c.scale,
                             elo=o.extra["elo"]))
        elo = pd.DataFrame(rows)
        out = Extra(tables={f"elo_{self.name}.csv": elo})
        base = [o for o in samples if o.cond.is_unsteered]
        lines = []
        if base:
            ratings = np.array([o.extra["elo"] for o in base])
            reads = pd.DataFrame([o.extra["readout"] for o in base])
            corr = [(e, float(np.corrcoef(ratings, reads[e])[0, 1])) for e in reads.columns
                    if reads[e].std() > 0]
            table = pd.DataFrame(corr, columns=["emotion", "r_elo"]).sort_values(
                "r_elo", ascending=False)
            out.tables[f"elo_readout_{self.name}.csv"] = table
            groups = elo[elo.vector == UNSTEERED.vector].groupby("group")["elo"].mean().round(1)
            lines += ["", f"## Preferences ({self.name})", "",
                      f"Unsteered mean Elo per group: {groups.to_dict()}.",
                      "Emotions whose read-out over an activity's text best tracks its unsteered "
                      "Elo (Pearson r over activities; full table in "
                      f"`elo_readout_{self.name}.csv`):", "", "```",
                      table.head(8).round(3).to_string(index=False), "...",
                      table.tail(5).round(3).to_string(index=False, header=False), "```"]
        out.report = lines
        return out
