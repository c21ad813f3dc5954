"""Multiple-choice behaviour items scored from next-token log-probabilities.

Each item is shown in every cyclic order of its options (both orders for A/B), so that a
preference for a letter or a position cancels out. After the prompt the assistant's answer is
prefilled with a stem ending in "(" and the log-probabilities of the option letters are read
and normalized over the options. `p_<behaviour>` is the probability of the options marked as
the behaviour, averaged over orders.

Before any steering effect is read, `competence` asks whether the unsteered model answers by
content at all (the same option preferred in every order); the unsteered run also scores a
built-in probe of trivial known-answer A/B questions in the same rendering, which tells a model
that cannot answer A/B questions from one that does not grasp these dilemmas.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Literal

from pydantic import Field

from steer.errors import TaskDataError
from steer.results.competence import flagged, mean_of, order_verdict, ratio, share
from steer.tasks.base import UNSTEERED, Competence, Condition, Context, Sample
from steer.tasks.items import (
    CHOICE_SUITES,
    ChoiceItem,
    SuiteTask,
    load_choice_items,
    load_probe_items,
)

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


def p_options(logprobs: list[float], order: list[int]) -> list[float]:
    """Each option's probability (in the item's own option order), normalized over the letters
    shown in `order`.

    Example:
        >>> import math
        >>> from steer.tasks.choice import p_options
        >>> [round(p, 2) for p in p_options([math.log(0.6), math.log(0.2)], [1, 0])]
        [0.25, 0.75]
    """
    top = max(logprobs)
    w = [math.exp(x - top) for x in logprobs]
    out = [0.0] * len(order)
    for wk, j in zip(w, order):
        out[j] = wk / sum(w)
    return out


def probs_by_order(sample: Sample, item: ChoiceItem) -> list[list[float]] | None:
    """Each order's option probabilities (item's option order) from a sample's extra: kept as
    `p_options` for items of 3+ options, derived from `p_by_order` for two; None if neither.

    Example:
        >>> import steer
        >>> from steer.tasks.choice import probs_by_order
        >>> from steer.tasks.items import ChoiceItem, Option
        >>> item = ChoiceItem("x", "q", (Option("cheat", True), Option("report", False)))
        >>> s = steer.Sample(0, 0, steer.UNSTEERED, {}, {"p_by_order": [0.9, 0.1]})
        >>> probs_by_order(s, item)  # picks letter A: cheat first, then report
        [[0.9, 0.09999999999999998], [0.1, 0.9]]
    """
    if "p_options" in sample.extra:
        return sample.extra["p_options"]
    ps = sample.extra.get("p_by_order")
    if ps is None or len(item.options) != 2 or len(ps) != 2:
        return None
    beh = [o.behavior for o in item.options]
    return [[p if b else 1 - p for b in beh] for p in ps]


class ChoiceSpec(SuiteTask):
    """A/B (or more) behaviour items scored from the answer letters' log-probabilities:
    `suite` (a built-in suite) or `file` (JSONL in steer's or Anthropic's evals format)."""

    type: Literal["choice"] = "choice"
    behavior: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$")
    stem: str = "I choose ("
    # the right answers of a file that does not mark them (`correct: true` on options): the
    # behaviour's options (Anthropic's self-awareness evals) or the others; for the competence
    # check only, so it keys no cell
    known_answer: Literal["behavior", "other"] | None = None

    deterministic: ClassVar[bool] = True  # log-probabilities: one seed is enough
    suites: ClassVar[tuple[str, ...]] = CHOICE_SUITES
    suite_required: ClassVar[bool] = True

    def load(self, source: str, limit: int | None) -> list[ChoiceItem]:
        items = load_choice_items(source, limit)
        if self.known_answer is None:
            return items
        right = self.known_answer == "behavior"
        return [dataclasses.replace(it, options=tuple(dataclasses.replace(
            o, correct=o.behavior == right) for o in it.options)) for it in items]

    def key(self) -> dict:
        return {k: v for k, v in super().key().items() if k != "known_answer"}

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
                for cond in conditions:
                    prompt = model.format_prompt(text, ctx.system_prompt_for(cond)) + self.stem
                    rows.append(GenRow(prompt, ctx.interventions(cond, seed)))
                    keys.append((i, k, cond))
                    cands.append(ids_by_n[n])
        with progress.task(self.name, len(rows), ctx.quiet) as adv:
            lps = next_token_logprobs(model, rows, cands, ctx.vectors, ctx.batch_size, adv)
        acc: dict[tuple, list[float]] = {}
        letter_mass: dict[tuple, list[float]] = {}
        by_option: dict[tuple, list[list[float]]] = {}
        for (i, k, cond), lp in zip(keys, lps):
            order = orders(len(items[i].options))[k]
            acc.setdefault((i, cond), []).append(p_behavior(lp, order, items[i]))
            by_option.setdefault((i, cond), []).append(p_options(lp, order))
            # how much of the next-token distribution the letters hold: a check that the model
            # is answering the question at all
            letter_mass.setdefault((i, cond), []).append(sum(math.exp(x) for x in lp))
        out = []
        for (i, cond), ps in acc.items():
            mass = letter_mass[(i, cond)]
            extra = {"item_id": items[i].id, "p_by_order": [round(p, 4) for p in ps]}
            if len(items[i].options) > 2:  # with two, p_by_order says which content won
                extra["p_options"] = [[round(p, 4) for p in po] for po in by_option[(i, cond)]]
            out.append(Sample(i, seed, cond,
                              {metric: sum(ps) / len(ps), "option_mass": sum(mass) / len(mass)},
                              extra))
        first = next((o for o in out if o.cond.is_unsteered), None)
        if first is not None:  # the probe goes with the unsteered model's first item
            first.extra["probe"] = self.probe(ctx)
        return out

    def probe(self, ctx: Context) -> dict:
        """The built-in known-answer A/B probe (`load_probe_items`) under the unsteered model,
        in this task's rendering, stem and system prompt: the right option's probability in
        each order of each probe item (`p_right_by_order`), and the letters' mean mass."""
        from steer.lm.decode import GenRow
        from steer.lm.read import next_token_logprobs

        model = ctx.model
        probe = load_probe_items()
        system = ctx.system_prompt_for(UNSTEERED)
        rows, cands, keys = [], [], []
        for i, item in enumerate(probe):
            ids = label_ids(model.tokenizer, self.stem, len(item.options))
            for order in orders(len(item.options)):
                text = render(item.prompt, [item.options[j].text for j in order])
                rows.append(GenRow(model.format_prompt(text, system) + self.stem))
                cands.append(ids)
                keys.append((i, order))
        # a call of its own: the items' rows keep the batches (and padding) they had without it
        lps = next_token_logprobs(model, rows, cands, ctx.vectors, ctx.batch_size)
        right: list[list[float]] = [[] for _ in probe]
        mass = []
        for (i, order), lp in zip(keys, lps):
            po = p_options(lp, order)
            right[i].append(round(sum(po[j] for j in probe[i].right), 4))
            mass.append(sum(math.exp(x) for x in lp))
        return {"p_right_by_order": right, "option_mass": round(sum(mass) / len(mass), 4)}

    def competence(self, samples: list[Sample]) -> Competence | None:
        """Does the unsteered model answer these items by their content? Measures, from the
        unsteered samples: `order_agreement` (share of items whose preferred option is the same
        in every order: ~0 for a model following the letter's position, ~1/2 for a coin flip
        with two options, ~1 when it reads the options), `option_mass` (next-token mass on the
        letters), `first_position` (share of it on the first letter), `margin` (mean gap
        between the two likeliest options: ~0 for a model indifferent between them),
        `accuracy` (items with a known answer, right in every order) and `probe_accuracy` (the
        built-in trivial A/B probe, right in both orders).

        The rule (`steer.results.competence.order_verdict`): at chance unless the Wilson CI of
        order agreement lies above the chance level of agreement, or (whatever that says)
        when the letters hold under half the mass. Known-answer accuracy is reported, not
        ruled on: in these suites the known answer is the behaviour or its opposite, so a
        reliably sycophantic model is "wrong" without being at chance. The probe says, for a
        task at chance, whether the model cannot answer A/B questions at all (probe CI not
        above 1/2) or answers trivial ones but not these."""
        base = [s for s in samples if s.cond.is_unsteered and not s.nonfinite]
        items = self.loaded()
        n = agree = known = right = 0
        chance, firsts, gaps, sizes = [], [], [], set()
        for s in base:
            item = items[s.item] if s.item < len(items) else None
            pbo = probs_by_order(s, item) if item is not None else None
            if not pbo or any(math.isnan(p) for po in pbo for p in po):
                continue
            k = len(item.options)
            tops = [max(range(k), key=po.__getitem__) for po in pbo]
            n += 1
            agree += len(set(tops)) == 1
            chance.append((1 / k) ** (k - 1))  # a fair coin picks the same content k times
            firsts += [po[order[0]] for po, order in zip(pbo, orders(k))]
            gaps += [top - second for top, second, *_ in (sorted(po, reverse=True)
                                                          for po in pbo)]
            sizes.add(k)
            if item.right:
                known += 1
                right += all(t in item.right for t in tops)
        if not n:
            return None
        where = "the two orders" if sizes == {2} else "every order"
        checks = {"order_agreement": share(agree, n),
                  "option_mass": mean_of(s.metrics["option_mass"] for s in base
                                         if "option_mass" in s.metrics),
                  "first_position": mean_of(firsts), "margin": mean_of(gaps)}
        at, reason = order_verdict(checks["order_agreement"], sum(chance) / n,
                                   checks["option_mass"], checks["first_position"], "items",
                                   where, checks["margin"])
        if known:
            checks["accuracy"] = share(right, known)
            reason += f"; right in {where} on {ratio(checks['accuracy'], 'known answers')}"
        probe = next((s.extra["probe"] for s in base if "probe" in s.extra), None)
        if probe:
            hits = [all(p > 0.5 for p in ps) for ps in probe["p_right_by_order"]]
            checks["probe_accuracy"] = p = share(sum(hits), len(hits))
            checks["probe_option_mass"] = {"value": probe["option_mass"], "ci_low": math.nan,
                                           "ci_high": math.nan, "n": len(hits)}
            reason += f"; trivial A/B probe right in both orders on {ratio(p, 'questions')}"
            if at:
                reason += (": it answers simple A/B questions, not these" if p["ci_low"] > 0.5
                           else ": it cannot answer A/B questions at all")
        return Competence(self.name, checks, at, flagged(reason) if at else reason)
