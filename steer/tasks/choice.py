"""Multiple-choice behaviour items scored from next-token log-probabilities.

Each item is shown in every cyclic order of its options (both orders for A/B), so that a
preference for a letter or a position cancels out. After the prompt the assistant's answer is
prefilled with a stem ending in "(" and the log-probabilities of the option letters are read
and normalized over the options. `p_<behaviour>` is the probability of the options marked as
the behaviour, averaged over orders.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

from pydantic import Field

from steer.errors import TaskDataError
from steer.tasks.base import Condition, Context, Sample
from steer.tasks.items import CHOICE_SUITES, ChoiceItem, SuiteTask, load_choice_items

LABELS = "ABCDEFGHIJ"


def orders(n: int) -> list[list[int]]:
    """Cyclic rotations of n options: every option appears once in every position."""
    return [[(k + j) % n for j in range(n)] for k in range(n)]


def render(prompt: str, options: list[str]) -> str:
    labels = [f"({x})" for x in LABELS[:len(options)]]
    lines = "\n".join(f"{lab} {text}" for lab, text in zip(labels, options))
    ask = " or ".join([", ".join(labels[:-1]), labels[-1]]) if len(labels) > 1 else labels[0]
    return f"{prompt}\n\n{lines}\n\nAnswer with {ask}."


def label_ids(tokenizer, stem: str, n: int) -> list[int]:
    """The token id of each option letter right after `stem`; an error if a letter would not
    be a token of its own there (the tokenizer merges it with the stem)."""
    base = tokenizer(stem, add_special_tokens=False).input_ids
    out = []
    for letter in LABELS[:n]:
        ids = tokenizer(stem + letter, add_special_tokens=False).input_ids
        if ids[:len(base)] != base or len(ids) != len(base) + 1:
            raise TaskDataError(f"answer stem {stem!r}: the letter {letter!r} is not a separate "
                                "token after it for this tokenizer; choose a stem ending in ' ('")
        out.append(ids[-1])
    return out


def p_behavior(logprobs: list[float], order: list[int], item: ChoiceItem) -> float:
    """Probability mass on behaviour options, normalized over the options' letters."""
    top = max(logprobs)
    w = [math.exp(x - top) for x in logprobs]
    total = sum(w)
    return sum(wk for wk, j in zip(w, order) if item.options[j].behavior) / total


class ChoiceSpec(SuiteTask):
    """A/B (or more) behaviour items scored from the answer letters' log-probabilities:
    `suite` (a built-in suite) or `file` (JSONL in steer's or Anthropic's evals format)."""

    type: Literal["choice"] = "choice"
    behavior: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$")
    stem: str = "I choose ("

    deterministic: ClassVar[bool] = True  # log-probabilities: one seed is enough
    suites: ClassVar[tuple[str, ...]] = CHOICE_SUITES
    suite_required: ClassVar[bool] = True

    def load(self, source: str, limit: int | None) -> list[ChoiceItem]:
        return load_choice_items(source, limit)

    def items(self) -> list[str]:
        return [it.prompt for it in self.loaded()]

    def rows_per_condition(self) -> int:
        return 2 * len(self.loaded())  # at least two option orders

    @property
    def metric(self) -> str:
        return f"p_{self.behavior or self.name}"

    def run(self, ctx: Context, conditions: list[Condition], seed: int) -> list[Sample]:
        from steer import progress
        from steer.lm.decode import GenRow
        from steer.lm.read import next_token_logprobs

        model = ctx.model
        items = self.loaded()
        metric = self.metric
        rows, keys, cands = [], [], []
        ids_by_n: dict[int, list[int]] = {}
        for i, item in enumerate(items):
            n = len(item.options)
            if n > len(LABELS):
                raise TaskDataError(f"{self.name}: item {item.id} has {n} options, at most "
                                    f"{len(LABELS)} are supported")
            if n not in ids_by_n:
                ids_by_n[n] = label_ids(model.tokenizer, self.stem, n)
            for k, order in enumerate(orders(n)):
                text = render(item.prompt, [item.options[j].text for j in order])
                prompt = model.format_prompt(text, ctx.system_prompt) + self.stem
                for cond in conditions:
                    rows.append(GenRow(prompt, ctx.interventions(cond, seed)))
                    keys.append((i, k, cond))
                    cands.append(ids_by_n[n])
        with progress.task(self.name, len(rows), ctx.quiet) as adv:
            lps = next_token_logprobs(model, rows, cands, ctx.vectors, ctx.batch_size, adv)
        acc: dict[tuple, list[float]] = {}
        letter_mass: dict[tuple, list[float]] = {}
        for (i, k, cond), lp in zip(keys, lps):
            order = orders(len(items[i].options))[k]
            acc.setdefault((i, cond), []).append(p_behavior(lp, order, items[i]))
            # how much of the next-token distribution the letters hold: a check that the model
            # is answering the question at all
            letter_mass.setdefault((i, cond), []).append(sum(math.exp(x) for x in lp))
        out = []
        for (i, cond), ps in acc.items():
            mass = letter_mass[(i, cond)]
            out.append(Sample(i, seed, cond,
                              {metric: sum(ps) / len(ps), "option_mass": sum(mass) / len(mass)},
                              {"item_id": items[i].id, "p_by_order": [round(p, 4) for p in ps]}))
        return out
