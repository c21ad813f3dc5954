"""What a reader must know before reading a number: the flags on a run's summary.

Two checks flag rows of summary.csv (its `flags` column) and say so in the terminal and in
report.md: a task the unsteered model does not do (steer.results.competence: its steering
effects are not interpretable), and a condition whose replies collapsed (the fluency rule of
steer.sweep.calibrate: perplexity ratio over the bound, or repetition worse than the random
control's), whose means are kept but must not be averaged into a story about emotion.
"""

from __future__ import annotations

import pandas as pd

AT_CHANCE = "task at chance"
COLLAPSED = "replies collapsed"


def flag_summary(summary: pd.DataFrame, at_chance: set[str], collapse: pd.DataFrame
                 ) -> pd.DataFrame:
    """`summary` with a `flags` column: `task at chance` on every row of a flagged task, and
    `replies collapsed (<reason>)` on every row of a condition (vector, layer, scale) whose
    replies collapsed in some task; several flags joined by "; ", empty when none.

    Example:
        >>> import pandas as pd
        >>> s = pd.DataFrame({"task": ["gen", "gen", "ab"], "vector": ["calm"] * 3,
        ...                   "layer": 2, "scale": [0.0, 0.4, 0.4], "metric": "m"})
        >>> c = pd.DataFrame({"task": ["gen"], "vector": ["calm"], "layer": [2], "scale": [0.4],
        ...                   "collapsed": [True], "reason": ["perplexity ratio 3.0 > 1.5"]})
        >>> flag_summary(s, {"ab"}, c)["flags"].tolist()
        ['', 'replies collapsed (gen: perplexity ratio 3.0 > 1.5)', \
'task at chance; replies collapsed (gen: perplexity ratio 3.0 > 1.5)']
    """
    flags = [[] for _ in range(len(summary))]
    for i, task in enumerate(summary.task):
        if task in at_chance:
            flags[i].append(AT_CHANCE)
    if not collapse.empty:
        bad = collapse[collapse.collapsed.astype(bool)]
        why: dict[tuple, list[str]] = {}
        for r in bad.itertuples():
            why.setdefault((r.vector, int(r.layer), float(r.scale)), []).append(
                f"{r.task}: {r.reason}")
        for i, key in enumerate(zip(summary.vector, summary.layer, summary.scale)):
            reasons = why.get((key[0], int(key[1]), float(key[2])))
            if reasons:
                flags[i].append(f"{COLLAPSED} ({'; '.join(reasons)})")
    return summary.assign(flags=["; ".join(f) for f in flags])


def collapse_lines(collapse: pd.DataFrame) -> list[str]:
    """One line per collapsed condition, for the terminal and report.md (none when no condition
    collapsed).

    Example:
        >>> import pandas as pd
        >>> c = pd.DataFrame({"task": ["gen"], "vector": ["calm"], "layer": [2], "scale": [0.4],
        ...                   "collapsed": [True], "reason": ["perplexity ratio 3.0 > 1.5"]})
        >>> collapse_lines(c)
        ['collapsed: gen, calm L2 x+0.4: perplexity ratio 3.0 > 1.5 (flagged in summary.csv)']
    """
    if collapse.empty:
        return []
    return [f"collapsed: {r.task}, {r.vector} L{int(r.layer)} x{float(r.scale):+.3g}: {r.reason}"
            " (flagged in summary.csv)"
            for r in collapse[collapse.collapsed.astype(bool)].itertuples()]


def terminal_flags(run, metrics: list[str] | None = None) -> list:
    """What `steer run` prints after its tables: a warning per task at chance and per collapsed
    condition, and the prompting baseline's comparison on the behaviour metrics among `metrics`
    and the read-out of the steered emotion itself, read from the run directory's
    competence.csv, collapse.csv and instructed.csv (all metrics are in instructed.csv)."""
    from rich.table import Table
    from rich.text import Text

    from steer.results.competence import competence_warnings
    from steer.results.tables import is_behaviour

    out: list = []
    competence = run.table("competence")
    if not competence.empty:
        out += [Text(f"warning: {w}", style="yellow") for w in competence_warnings(competence)]
    collapse = run.table("collapse")
    if not collapse.empty:
        out += [Text(line, style="yellow") for line in collapse_lines(collapse)]
    comp = run.table("instructed")
    if not comp.empty:
        keep = [(metrics is None or m in metrics) and (is_behaviour(m) or m == f"readout.{e}")
                for m, e in zip(comp.metric, comp.emotion)]
        comp = comp[keep]
        table = Table(title="steering vs instructing (minus unsteered, 95% CI)",
                      title_style="bold")
        for col in ("task", "metric", "steering", "steered", "instructed", "vs instructed"):
            table.add_column(col, justify="left" if col in ("task", "metric", "steering")
                             else "right")

        def ci(m, lo, hi):
            return f"{m:+.2g} [{lo:+.2g}, {hi:+.2g}]"

        for r in comp.itertuples():
            table.add_row(r.task, r.metric, f"{r.emotion} x{r.scale:+.2g}",
                          ci(r.steered, r.steered_low, r.steered_high),
                          ci(r.instructed, r.instructed_low, r.instructed_high), r.relation)
        if len(comp):
            out.append(table)
    return out
