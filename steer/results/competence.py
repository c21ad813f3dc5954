"""Does the unsteered model do each task at all? Checked before any steering effect is read.

A null result means "steering does nothing" only if the model does the task unsteered. Each
behaviour task measures that on its unsteered samples (`TaskSpec.competence`, a `Competence`);
this module holds the measures' shared arithmetic (shares with Wilson intervals, means with
bootstrap intervals), the one rule for A/B tasks (`order_verdict`), and the table and lines
the run's summary, report and terminal show.

The rule for A/B tasks (choice, preference): each item is asked in every order of its options.
A model that reads the options prefers the same *content* in every order; one that follows the
letter's position never does, and a coin flip does so by chance (1/2 with two options). The
task is done only if the share of items whose preferred content agrees across orders has a 95%
Wilson interval lying wholly above that chance level, and the option letters hold at least half
of the next-token mass (below that, the model does not answer in the format at all).
"""

from __future__ import annotations

import math

import pandas as pd

from steer.results.stats import bootstrap_ci

NOT_INTERPRETABLE = "steering effects on this task are not interpretable"
MIN_LETTER_MASS = 0.5  # below: the model does not answer in the A/B format


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a share k/n (95% by default); (nan, nan) when n is 0.

    Example:
        >>> from steer.results.competence import wilson
        >>> [round(x, 3) for x in wilson(2, 12)]
        [0.047, 0.448]
        >>> wilson(0, 0)
        (nan, nan)
    """
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, mid - half), min(1.0, mid + half)


def share(k: int, n: int) -> dict:
    """A measured share as a competence check: value, Wilson CI, n and k.

    Example:
        >>> from steer.results.competence import share
        >>> s = share(3, 4)
        >>> s["value"], s["n"], s["k"], round(s["ci_low"], 2)
        (0.75, 4, 3, 0.3)
    """
    lo, hi = wilson(k, n)
    return {"value": k / n if n else math.nan, "ci_low": lo, "ci_high": hi, "n": n, "k": k}


def mean_of(values) -> dict:
    """A measured mean as a competence check: value, percentile-bootstrap CI, n.

    Example:
        >>> from steer.results.competence import mean_of
        >>> m = mean_of([0.9, 0.95, 1.0])
        >>> round(m["value"], 2), m["n"], m["ci_low"] <= m["value"] <= m["ci_high"]
        (0.95, 3, True)
    """
    vals = [float(v) for v in values]
    mean, lo, hi = bootstrap_ci(vals)
    return {"value": mean, "ci_low": lo, "ci_high": hi, "n": len(vals)}


def ratio(m: dict, unit: str) -> str:
    """'k/n <unit> (CI lo-hi)' for a share.

    Example:
        >>> from steer.results.competence import ratio, share
        >>> ratio(share(3, 4), "items")
        '3/4 items (CI 0.30-0.95)'
    """
    return f"{m['k']}/{m['n']} {unit} (CI {m['ci_low']:.2f}-{m['ci_high']:.2f})"


def order_verdict(agreement: dict, chance: float, letter_mass: dict | None,
                  first: dict | None, unit: str = "items", orders: str = "the two orders",
                  margin: dict | None = None) -> tuple[bool, str]:
    """(at chance?, reason) for an A/B task from its order agreement (a `share`), the chance
    level of agreement, the mean letter mass, the mean share of it on the first position, and
    the mean margin between the two likeliest options (how decided the answers are).

    Example:
        >>> from steer.results.competence import mean_of, order_verdict, share
        >>> at, why = order_verdict(share(2, 12), 0.5, mean_of([0.97]), mean_of([0.93]),
        ...                         margin=mean_of([0.86]))
        >>> at
        True
        >>> why
        'at chance: options in the two orders agree on 2/12 items (CI 0.05-0.45; chance 0.50); 97% of the next-token mass on the option letters, 93% of it on (A), margin 0.86'
    """  # noqa: E501
    agree = (f"options in {orders} agree on {ratio(agreement, unit)[:-1]}; "
             f"chance {chance:.2f})")
    mass = ""
    if letter_mass is not None and not math.isnan(letter_mass["value"]):
        mass = f"{letter_mass['value']:.0%} of the next-token mass on the option letters"
        if first is not None and not math.isnan(first["value"]):
            mass += f", {first['value']:.0%} of it on (A)"
        if margin is not None and not math.isnan(margin["value"]):
            mass += f", margin {margin['value']:.2f}"
    if letter_mass is not None and letter_mass["value"] < MIN_LETTER_MASS:
        return True, f"does not answer in the format: only {mass}; {agree}"
    at_chance = not agreement["n"] or not agreement["ci_low"] > chance
    head = "at chance" if at_chance else "does the task"
    return at_chance, "; ".join(x for x in (f"{head}: {agree}", mass) if x)


def flagged(reason: str) -> str:
    """A flagged task's reason, ending in what it means for the steering effects.

    Example:
        >>> from steer.results.competence import flagged
        >>> flagged("at chance: 1/8 items agree")
        'at chance: 1/8 items agree; steering effects on this task are not interpretable'
    """
    return f"{reason}; {NOT_INTERPRETABLE}"


def competence_table(tasks, samples_by_task: dict) -> pd.DataFrame:
    """One row per task with a competence check: task, at_chance, reason, then every measure
    as columns (`<m>`, `<m>_ci_low`, `<m>_ci_high`, `<m>_n`). `tasks`: task specs;
    `samples_by_task`: task name -> its samples (any conditions: the unsteered ones are read).

    Example:
        >>> import steer
        >>> from steer.results.competence import competence_table
        >>> from steer.tasks.code import CodeSpec
        >>> task = CodeSpec(name="code", suite="impossible")
        >>> broken = {"attempts": [{"class": "broken"}]}
        >>> samples = [steer.Sample(i, 0, steer.UNSTEERED, {}, broken) for i in range(4)]
        >>> t = competence_table([task], {"code": samples})
        >>> t.loc[0, "task"], bool(t.loc[0, "at_chance"]), float(t.loc[0, "runnable"])
        ('code', True, 0.0)
        >>> t.loc[0, "reason"].split(";")[0]
        'mostly broken: 4/4 unsteered attempts broken (no runnable code, an exception or a timeout)'

    """
    rows = []
    for task in tasks:
        check = task.competence(list(samples_by_task.get(task.name, [])))
        if check is None:
            continue
        row = {"task": check.task, "at_chance": bool(check.at_chance), "reason": check.reason}
        for name, m in check.checks.items():
            row[name] = m.get("value", math.nan)
            for part in ("ci_low", "ci_high", "n"):
                row[f"{name}_{part}"] = m.get(part, math.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["task", "at_chance", "reason"])


def competence_warnings(table: pd.DataFrame) -> list[str]:
    """One terminal line per flagged task: '<task>: <reason>'.

    Example:
        >>> import pandas as pd
        >>> from steer.results.competence import competence_warnings
        >>> t = pd.DataFrame([{"task": "a", "at_chance": True, "reason": "at chance: x; y"},
        ...                   {"task": "b", "at_chance": False, "reason": "does the task: z"}])
        >>> competence_warnings(t)
        ['a: at chance: x; y']
    """
    return [f"{r.task}: {r.reason}" for r in table.itertuples() if r.at_chance]


def competence_lines(table: pd.DataFrame) -> list[str]:
    """report.md lines: a section with one line per checked task (flagged tasks first, each
    as its terminal warning); none when no task was checked.

    Example:
        >>> import pandas as pd
        >>> from steer.results.competence import competence_lines
        >>> t = pd.DataFrame([{"task": "b", "at_chance": False, "reason": "does the task: z"},
        ...                   {"task": "a", "at_chance": True, "reason": "at chance: x"}])
        >>> competence_lines(t)[-2:]
        ['- **a**: at chance: x', '- b: does the task: z']
        >>> competence_lines(t.iloc[:0])
        []
    """
    if table.empty:
        return []
    lines = ["", "## Does the unsteered model do each task?", "",
             "Checked on the unsteered model before any steering effect is read (A/B tasks: do "
             "the options in every order get the same answer, and do the option letters hold "
             "the next-token mass; code: is most code runnable).", ""]
    order = table.sort_values("at_chance", ascending=False, kind="stable")
    for r in order.itertuples():
        name = f"**{r.task}**" if r.at_chance else r.task
        lines.append(f"- {name}: {r.reason}")
    return lines
