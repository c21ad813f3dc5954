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

import numpy as np
import pandas as pd

from steer.generate import GenRow, next_token_logprobs, readout_prompts
from steer.plan import row_seed
from steer.tasks.base import Outcome, TaskContext
from steer.tasks.choice import label_ids, render
from steer.tasks.items import load_activities

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


def execute(ctx: TaskContext, task, base=None) -> list[Outcome]:
    from steer import progress

    model = ctx.model
    acts = load_activities(task.suite or task.file, base, task.limit)
    seed = ctx.seeds[0]
    pairs = design(len(acts), task.pairs, ctx.plan.seeds[0])
    letters = label_ids(model.tokenizer, task.stem, 2)
    rows, keys = [], []
    for k, (i, j) in enumerate(pairs):
        for flipped in (False, True):
            a, b = (acts[j], acts[i]) if flipped else (acts[i], acts[j])
            prompt = model.format_prompt(render(QUESTION, [a.text, b.text]), ctx.system)
            for cond in ctx.conditions:
                rows.append(GenRow(prompt + task.stem, ctx.interventions(cond, seed)))
                keys.append((k, flipped, cond))
    with progress.task(task.name, len(rows), ctx.quiet) as adv:
        lps = next_token_logprobs(model, rows, [letters] * len(rows), ctx.vectors,
                                  ctx.batch_size, adv)
    p_first: dict = {}
    for (k, flipped, cond), lp in zip(keys, lps):
        pa = 1 / (1 + math.exp(lp[1] - lp[0]))  # P(A) normalized over the two letters
        p_first.setdefault(cond, [0.0] * len(pairs))[k] += (1 - pa if flipped else pa) / 2
    # read-outs of each activity's text by the unsteered model, for the Elo correlation
    reads = []
    if None in ctx.conditions:  # only the baseline's outcomes carry them
        texts = [GenRow(model.format_prompt(a.text, ctx.system)) for a in acts]
        skip = [model.user_offset(a.text, ctx.system) for a in acts]
        reads = readout_prompts(model, texts, skip, ctx.vectors, ctx.readout_layer,
                                list(ctx.vectors.names), ctx.batch_size)
    out = []
    for cond, ps in p_first.items():
        elo = bradley_terry(len(acts), pairs, ps)
        for i, a in enumerate(acts):
            extra = {"activity": a.text, "group": a.group, "elo": round(float(elo[i]), 2)}
            if cond is None:
                extra["readout"] = {e: round(v, 5) for e, v in reads[i].items()}
            out.append(Outcome(i, seed, cond, {f"elo.{a.group}": float(elo[i])}, extra))
    return out


def write_tables(run, task_name: str, outcomes: list[Outcome], results, plan, cfg) -> list[str]:
    """elo.csv (every activity's Elo per condition) and elo_readout.csv (Pearson r of the
    unsteered Elo with each emotion's read-out over the activity texts); markdown lines."""
    rows = []
    for o in outcomes:
        c = o.cond
        rows.append(dict(task=task_name, item=o.item, activity=o.extra["activity"],
                         group=o.extra["group"], vector="none" if c is None else c.vector,
                         layer=-1 if c is None else c.layer, scale=0.0 if c is None else c.scale,
                         elo=o.extra["elo"]))
    elo = pd.DataFrame(rows)
    run.write_table(f"elo_{task_name}.csv", elo)
    base = [o for o in outcomes if o.cond is None]
    lines = []
    if base:
        ratings = np.array([o.extra["elo"] for o in base])
        reads = pd.DataFrame([o.extra["readout"] for o in base])
        corr = [(e, float(np.corrcoef(ratings, reads[e])[0, 1])) for e in reads.columns
                if reads[e].std() > 0]
        table = pd.DataFrame(corr, columns=["emotion", "r_elo"]).sort_values(
            "r_elo", ascending=False)
        run.write_table(f"elo_readout_{task_name}.csv", table)
        groups = elo[elo.vector == "none"].groupby("group")["elo"].mean().round(1)
        lines += ["", f"## Preferences ({task_name})", "",
                  f"Unsteered mean Elo per group: {groups.to_dict()}.",
                  "Emotions whose read-out over an activity's text best tracks its unsteered "
                  "Elo (Pearson r over activities; full table in "
                  f"`elo_readout_{task_name}.csv`):", "", "```",
                  table.head(8).round(3).to_string(index=False), "...",
                  table.tail(5).round(3).to_string(index=False, header=False), "```"]
    return lines
