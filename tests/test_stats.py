import math

import numpy as np
import pytest

from steer.results.stats import bootstrap_ci, spearman
from steer.tasks.metrics import repetition, sentiment


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = rng.normal(2.0, 1.0, 20)
    large = rng.normal(2.0, 1.0, 2000)
    m, lo, hi = bootstrap_ci(small)
    assert lo < m < hi
    _, lo2, hi2 = bootstrap_ci(large)
    assert (hi2 - lo2) < (hi - lo) / 5
    assert lo2 < 2.0 < hi2
    assert all(math.isnan(x) for x in bootstrap_ci([float("nan")]))


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == 1.0
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert math.isnan(spearman([1, 2, 3], [5, 5, 5]))


def test_text_metrics():
    assert sentiment("I love this, it is wonderful!") > 0.5
    assert sentiment("This is terrible and I hate it.") < -0.5
    assert sentiment("") == 0.0
    assert repetition([1, 2, 3, 4, 5]) == 0.0
    assert repetition([1, 2, 3] * 10) > 0.8


# ------------------------------------------------------------------ verdicts (planted data)

COLUMNS = ["task", "item", "vector", "layer", "scale", "seed", "metric", "value"]
SCALES = (-0.2, 0.0, 0.2)


def planted(slopes: dict[str, float], items: int = 20, noise: float = 0.05, scales=SCALES,
            item_noise: float = 0.0, seed: int = 0, metric: str = "p_x"):
    """Results of one task and metric: each vector's value rises `slope` per unit scale, with
    noise per value and (`item_noise`) a random slope per item."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    rows = []
    for vec, slope in slopes.items():
        for item in range(items):
            own = slope + rng.normal(0, item_noise) if item_noise else slope
            for scale in scales:
                rows.append(("t", item, vec, 2, scale, 0, metric,
                             0.5 + own * scale + rng.normal(0, noise)))
    return pd.DataFrame(rows, columns=COLUMNS)


def verdicts_of(results, **kw) -> dict[str, str]:
    from steer.results.tables import effects

    return effects(results, n_boot=200, **kw).set_index("vector").verdict.to_dict()


def test_a_real_effect_is_found_and_a_null_is_not():
    # (seed 0 happens to plant a calm whose slope is 2.8 standard errors from 0: 2 in 200 seeds)
    v = verdicts_of(planted({"desperate": 1.0, "calm": 0.0, "random-0": 0.0, "random-1": 0.0},
                            seed=1))
    assert v == {"desperate": "effect", "calm": "no effect", "random": "control",
                 "random-0": "control", "random-1": "control"}


def test_a_single_item_or_seven_give_no_verdict():
    v = verdicts_of(planted({"desperate": 1.0, "random-0": 0.0}, items=1))
    assert v["desperate"] == "too few items"
    assert verdicts_of(planted({"desperate": 1.0, "random-0": 0.0}, items=7))["desperate"] \
        == "too few items"
    assert verdicts_of(planted({"desperate": 1.0, "random-0": 0.0}, items=8))["desperate"] \
        == "effect"


def test_a_slope_less_negative_than_the_controls_is_not_an_effect():
    from steer.results.tables import effects

    eff = effects(planted({"calm": -1.0, "random-0": -3.0}, noise=0.01), n_boot=200)
    calm = eff.set_index("vector").loc["calm"]
    assert calm.slope_adj_high < 0  # its own slope is clearly negative...
    assert calm.diff_adj_low > 0  # ...but clearly above the control's
    assert calm.verdict == "no effect"
    # the mirror case: more negative than the control is an effect
    assert verdicts_of(planted({"calm": -3.0, "random-0": -1.0}, noise=0.01))["calm"] == "effect"


def test_a_slope_whose_interval_holds_zero_is_not_an_effect_however_far_the_control():
    from steer.results.tables import effects

    res = planted({"calm": 0.1, "random-0": -5.0}, noise=0.01, item_noise=2.0, seed=3)
    calm = effects(res, n_boot=200).set_index("vector").loc["calm"]
    assert calm.slope_adj_low < 0 < calm.slope_adj_high
    assert calm.diff_adj_low > 0  # far from the control
    assert calm.verdict == "no effect"


def test_false_effects_stay_rare_and_real_ones_are_found():
    """400 planted null rows and 400 real ones, each judged at level 0.95 (family alpha 0.05 x
    m, so that alpha/m = 0.05 per row): false effects stay under the per-row 5%."""
    import pandas as pd

    from steer.results.stats import assign_verdicts

    rng = np.random.default_rng(7)
    rows = []
    for i, true in enumerate([0.0] * 400 + [0.4] * 400):
        own, ctl = rng.normal(true, 0.5, 20), rng.normal(0.0, 0.5, 40)
        rows.append(dict(task="t", vector="v", layer=2, metric=f"m{i}", slope=own.mean(),
                         slope_sd=own.std(ddof=1), n_items=20, random_slope=ctl.mean(),
                         random_sd=ctl.std(ddof=1), random_n=40, unsteered=True))
    v = assign_verdicts(pd.DataFrame(rows), alpha=0.05 * 800).verdict
    false, found = (v[:400] == "effect").mean(), (v[400:] == "effect").mean()
    assert false < 0.05 and found > 0.6, (false, found)


def borderline(m: int):
    """An effects table with one borderline row (t about 3 on 20 items) and m - 1 null rows."""
    import pandas as pd

    rows = [dict(task="t", vector="desperate", layer=2, metric="m0", slope=0.3, slope_sd=0.45,
                 n_items=20)]
    rows += [dict(task="t", vector="desperate", layer=2, metric=f"m{i}", slope=0.0,
                  slope_sd=0.45, n_items=20) for i in range(1, m)]
    return pd.DataFrame(rows).assign(random_slope=0.0, random_sd=0.01, random_n=40,
                                     unsteered=True)


def test_bonferroni_turns_a_borderline_effect_at_m_1_into_none_at_m_200():
    from steer.results.stats import assign_verdicts

    one = assign_verdicts(borderline(1))
    assert one.verdict.tolist() == ["effect"] and one.m.iloc[0] == 1
    assert one.level.iloc[0] == pytest.approx(0.95)
    many = assign_verdicts(borderline(200))
    assert many.m.iloc[0] == 200 and many.level.iloc[0] == pytest.approx(1 - 0.05 / 200)
    assert many.verdict.iloc[0] == "no effect" and (many.verdict == "no effect").all()
    # the adjusted interval is wider; the 95% one would have excluded zero
    assert many.slope_adj_low.iloc[0] < 0 < one.slope_adj_low.iloc[0]


def test_rows_without_a_random_control_or_a_scale_0_say_so():
    from steer.results.stats import verdict_notes
    from steer.results.tables import effects

    eff = effects(planted({"desperate": 1.0}), n_boot=200)
    assert eff.verdict.tolist() == ["no random control"] and eff.m.iloc[0] == 0
    assert "random_controls" in verdict_notes(eff)[0]
    eff = effects(planted({"desperate": 1.0, "random-0": 0.0}, scales=(0.1, 0.2, 0.3)),
                  n_boot=200)
    assert eff.set_index("vector").verdict["desperate"] == "no baseline"
    (note,) = verdict_notes(eff)
    assert note.startswith("No verdicts for 1 row: the run has no scale 0")


def test_tasks_at_chance_get_no_verdict_and_leave_the_family():
    from steer.results.stats import assign_verdicts
    from steer.results.tables import effects

    res = planted({"desperate": 1.0, "random-0": 0.0})
    both = __import__("pandas").concat([res, res.assign(task="u")], ignore_index=True)
    eff = effects(both, n_boot=200, at_chance={"u"})
    tested = eff[~eff.vector.str.startswith("random")].set_index("task").verdict
    assert tested.to_dict() == {"t": "effect", "u": "task at chance"}
    assert eff.m.iloc[0] == 1
    assert assign_verdicts(eff).m.iloc[0] == 2  # assigned again, without the flag


def test_prompted_conditions_are_skipped_and_do_not_crash():
    import pandas as pd

    from steer.results.report import report_markdown, terminal_tables  # noqa: F401
    from steer.results.tables import effects, summarize, trends

    res = planted({"desperate": 1.0, "random-0": 0.0})
    prompt = res[res.scale == 0].assign(vector="prompt:desperate", layer=-1)
    both = pd.concat([res, prompt], ignore_index=True)
    eff = effects(both, n_boot=200)
    assert not eff.vector.str.startswith("prompt:").any()
    assert eff.set_index("vector").verdict["desperate"] == "effect"
    summary = summarize(both, n_boot=100)
    tr = trends(summary, ["desperate", "prompt:desperate"], eff)
    assert tr.vector.tolist() == ["desperate"] and tr.verdict.tolist() == ["effect"]
    assert terminal_tables(summary, eff, ["desperate", "prompt:desperate"])


def test_trends_carry_the_verdict_of_effects_so_they_cannot_disagree():
    import pandas as pd

    from steer.results.tables import effects, summarize, trends

    res = pd.concat([planted({"desperate": 1.0, "calm": 0.0, "random-0": 0.0}, metric=m,
                             seed=i) for i, m in enumerate(("p_x", "sentiment"))])
    eff = effects(res, n_boot=200)
    tr = trends(summarize(res, n_boot=100), ["desperate", "calm"], eff)
    joined = tr.merge(eff, on=["task", "vector", "layer", "metric"], suffixes=("", "_eff"))
    assert len(joined) == 4 and (joined.verdict == joined.verdict_eff).all()
    assert set(tr.verdict) == {"effect", "no effect"}
    assert "beyond_random_ci" not in tr.columns


def test_a_run_with_two_scales_says_why_it_has_no_trends():
    from rich.console import Console

    from steer.results.report import terminal_tables
    from steer.results.tables import effects, summarize, trends_note

    res = planted({"desperate": 1.0, "random-0": 0.0}, scales=(0.0, 0.2))
    summary = summarize(res, n_boot=100)
    assert trends_note(summary, ["desperate"]) == (
        "No trends: the run has 2 scales (0, 0.2); a trend against scale needs 3 or more.")
    console = Console(width=80, file=__import__("io").StringIO())
    for t in terminal_tables(summary, effects(res, n_boot=100), ["desperate"]):
        console.print(t)
    out = console.file.getvalue()
    assert "No trends: the run has 2 scales" in out and "trend against scale\n" not in out
    assert "Bonferroni across the m = 1 metrics tested" in out.replace("\n", " ")
    assert max(map(len, out.splitlines())) <= 80


def test_the_examples_of_the_results_modules_run():
    import doctest

    import steer.results.report
    import steer.results.stats
    import steer.results.tables

    for module in (steer.results.stats, steer.results.tables, steer.results.report):
        assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0, module
