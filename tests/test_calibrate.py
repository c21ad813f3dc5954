"""Calibrating a steering strength (steer/sweep/calibrate.py, autoscale.py): the table covers
the grid and is the same on every call, the fluency rule and the recommendation on planted
numbers, collapse flags of a summary, `steer calibrate` through the real executable, and
`steering.scales: auto` in a run (calibrated once, read back on resume)."""

import doctest
import itertools
import json
import math

import pandas as pd
import pytest

import steer
import steer.sweep.autoscale as autoscale
from steer.sweep.calibrate import (
    REPETITION_SLACK,
    calibrate,
    calibration_prompts,
    collapse_flags,
    fluency,
    recommend,
)

from .conftest import ROOT, steer_cli

SMOKE = ROOT / "configs" / "smoke.yaml"


def _tiny_calibration(tiny, tiny_vectors):
    return calibrate(tiny, tiny_vectors, steer=["desperate", "calm - desperate"], layers=[1, 2],
                     scales=[0.1, 1.0], prompts=calibration_prompts(2), readout_layer=3,
                     max_new_tokens=6, temperature=0, batch_size=8)


def test_calibration_covers_the_grid_recommends_within_it_and_repeats_exactly(tiny,
                                                                              tiny_vectors):
    cal = _tiny_calibration(tiny, tiny_vectors)
    t = cal.table
    vectors = ["desperate", "calm - desperate", "random-0"]
    grid = set(itertools.product([1, 2], [-1.0, -0.1, 0.1, 1.0], vectors))
    assert set(zip(t.layer, t.scale, t.vector)) == grid and len(t) == len(grid)
    assert (t.ppl_ratio > 0).all() and t.ppl_ratio.map(math.isfinite).all()
    # a read-out shift for each steering vector, none for the random control
    assert t[t.vector == "random-0"].readout_shift_per_unit.isna().all()
    assert t[t.vector != "random-0"].readout_shift_per_unit.notna().all()
    assert set(t.compared_with[t.vector == "random-0"]) == {"unsteered"}
    assert set(t.compared_with[t.vector != "random-0"]) == {"random"}
    rec = cal.recommendation
    assert rec["layer"] in (1, 2) and rec["scale"] in (0.1, 1.0)
    assert set(rec["readout_shift_per_unit"]) == {"desperate", "calm - desperate"}
    assert cal.grid["scales"] == [0.1, 1.0] and cal.unsteered["perplexity"] > 0

    again = _tiny_calibration(tiny, tiny_vectors)
    pd.testing.assert_frame_equal(t, again.table)
    assert again.recommendation == rec


def test_the_fluency_rule_on_planted_numbers():
    assert fluency(1.5, 0.10, 0.05) == (True, "")  # both limits are inclusive
    ok, why = fluency(1.51, 0.0, 0.0)
    assert not ok and why == "perplexity x1.51 > 1.5"
    ok, why = fluency(1.0, 0.05 + REPETITION_SLACK + 0.001, 0.05)
    assert not ok and why.startswith("repetition 0.101 > 0.050")
    assert not fluency(math.nan, 0.0, 0.0)[0]  # an unreadable perplexity is no pass
    assert fluency(1.0, 0.0, 0.0, nonfinite=1) == (False, "1 non-finite replies")


def _planted_table(fluent_of, shift_of):
    rows = [(L, sign * s, v, fluent_of(L, s, sign, v), shift_of(L, v))
            for L in (8, 12, 16) for s in (0.05, 0.1, 0.2, 0.4) for sign in (-1, 1)
            for v in ("calm", "random-0")]
    return pd.DataFrame(rows, columns=["layer", "scale", "vector", "fluent",
                                       "readout_shift_per_unit"])


def test_the_recommendation_on_a_planted_table():
    def fluent(L, s, sign, v):
        if L == 8:  # the random control breaks first: that caps the layer too
            return not (v == "random-0" and s >= 0.2)
        if L == 12:  # fluent again at 0.4, but 0.2 is not: the region ends at 0.1
            return s != 0.2
        return not (s == 0.05 and sign < 0)  # layer 16: the smallest fails on one side

    def shift(L, v):
        return math.nan if v.startswith("random") else {8: 0.1, 12: 2.0, 16: 5.0}[L]

    rec = recommend(_planted_table(fluent, shift))
    largest = {b["layer"]: b["largest_fluent_scale"] for b in rec["by_layer"]}
    assert largest == {8: 0.1, 12: 0.1, 16: 0.0}
    assert (rec["layer"], rec["scale"]) == (12, 0.1)  # shift reached: 0.2 against 0.01
    assert rec["readout_shift_per_unit"] == {"calm": pytest.approx(2.0)}
    assert rec["at_grid_edge"] is False

    nothing = recommend(_planted_table(lambda *a: False, shift))
    assert nothing["layer"] is None and nothing["scale"] is None
    assert "no candidate scale is fluent" in nothing["note"]


def _summary(rows):
    return pd.DataFrame([dict(task=t, vector=v, layer=L, scale=s, metric=m, mean=x, ci_low=x,
                              ci_high=x, n=8, n_nonfinite=0)
                         for t, v, L, s, metrics in rows for m, x in metrics.items()])


def test_collapse_flags_on_a_planted_summary():
    def pr(ppl, rep):
        return {"perplexity": ppl, "repetition": rep, "sentiment": 0.1}

    rows = [("stress", v, 12, 0.0, pr(10.0, 0.02))
            for v in ("desperate", "random-0", "random-1", "random")]
    rows += [
        ("stress", "desperate", 12, -0.2, pr(20.0, 0.03)),  # perplexity doubles
        ("stress", "desperate", 12, 0.2, pr(12.0, 0.05)),   # fluent
        ("stress", "desperate", 12, 0.4, pr(13.0, 0.28)),   # repetitive, but so is random
        ("stress", "random-0", 12, 0.2, pr(10.0, 0.04)),
        ("stress", "random-1", 12, 0.2, pr(11.0, 0.04)),
        ("stress", "random", 12, 0.2, pr(10.5, 0.04)),
        ("stress", "random-0", 12, 0.4, pr(10.0, 0.02)),
        ("stress", "random-1", 12, 0.4, pr(11.0, 0.04)),
        ("stress", "random", 12, 0.4, pr(10.5, 0.25)),      # the pooled row is the reference
        ("stress", "random", 12, -0.2, pr(10.0, 0.02)),
        ("stress", "prompt:desperate", -1, 0.0, pr(11.0, 0.09)),  # vs unsteered: repetitive
        ("blackmail", "desperate", 12, 0.2, {"p_blackmail": 0.5}),  # no fluency metrics
    ]
    f = collapse_flags(_summary(rows)).set_index(["vector", "layer", "scale"])
    assert set(collapse_flags(_summary(rows)).task) == {"stress"}
    assert list(f.columns) == ["task", "ppl_ratio", "repetition", "random_repetition",
                               "compared_with", "collapsed", "reason"]
    d = f.loc[("desperate", 12, -0.2)]
    assert d.collapsed and d.ppl_ratio == pytest.approx(2.0) and "perplexity" in d.reason
    assert not f.loc[("desperate", 12, 0.2)].collapsed
    high = f.loc[("desperate", 12, 0.4)]
    assert not high.collapsed and high.random_repetition == pytest.approx(0.25)
    prompted = f.loc[("prompt:desperate", -1, 0.0)]
    assert prompted.collapsed and prompted.compared_with == "unsteered"
    assert prompted.reason.startswith("repetition 0.090 > 0.020")
    assert f.loc[("random", 12, 0.4)].collapsed  # the control itself, against unsteered
    assert not f.loc[("random-1", 12, 0.4)].collapsed
    assert not f.loc[("desperate", 12, 0.0)].collapsed
    assert f.loc[("desperate", 12, 0.0)].ppl_ratio == 1.0

    # no random control in the run: steered rows are compared with the unsteered model
    alone = collapse_flags(_summary([r for r in rows if not r[1].startswith("random")]))
    assert set(alone.compared_with) == {"unsteered"}
    assert alone.set_index(["vector", "scale"]).loc[("desperate", 0.4)].collapsed
    assert collapse_flags(_summary([rows[-1]])).empty


def test_steer_calibrate_writes_its_three_files_and_prints_the_folder_last(tmp_path):
    res = steer_cli("calibrate", SMOKE, "--layers", "2", "--scales", "0.2", "--prompts", "2",
                    "--set", f"output_dir={tmp_path}", "--set", "generation.temperature=0",
                    "--quiet")
    assert res.returncode == 0, res.stderr
    folder = tmp_path / "smoke" / "calibration"
    assert res.stdout.strip().splitlines()[-1] == str(folder)
    table = pd.read_csv(folder / "calibration.csv")
    assert sorted(set(table.vector)) == ["calm", "desperate", "random-0"]
    assert sorted(set(table.scale)) == [-0.2, 0.2] and len(table) == 6
    record = json.loads((folder / "calibration.json").read_text())
    assert record["grid"]["layers"] == [2] and len(record["grid"]["prompts"]) == 2
    assert record["recommendation"]["layer"] in (2, None) and "fluent" in record["rule"]
    assert record["seconds"] > 0 and len(record["key"]) == 20
    assert (folder / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    assert "recommended" in res.stderr or "no recommendation" in res.stderr


@pytest.mark.parametrize("args, message", [
    (["--layers", "8,x"], "error: --layers: got '8,x', expected layer numbers"),
    (["--layers", "9"], "error: --layers: got 9, expected a layer in 0..3 (tiny-random has 4)"),
    (["--scales", "0.1,-0.2"], "error: --scales: got '0.1,-0.2', expected scale magnitudes"),
    (["--scales", "nan"], "error: --scales: got 'nan', expected scale magnitudes"),
    (["--prompts", "99"], "error: --prompts: got 99, expected 1 to 16"),
    (["--set", "steering=null"], "error: "),
])
def test_bad_calibrate_options_are_one_line_and_exit_2(tmp_path, args, message):
    res = steer_cli("calibrate", SMOKE, "--set", f"output_dir={tmp_path}", *args)
    assert res.returncode == 2, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith("--set")]
    assert len(lines) == 1 and lines[0].startswith(message), res.stderr
    assert not (tmp_path / "smoke").exists()  # refused before the run directory is touched


def test_scales_auto_is_planned_as_five_scales_without_loading_anything():
    cfg = steer.load_config(SMOKE, ["steering.scales=auto"])
    assert cfg.steering.scales == "auto"
    w = steer.plan_work(cfg)
    assert w.conditions == 4 * 5 and "auto" in w.note  # (2 vectors + 2 random) x 5 scales
    with pytest.raises(steer.ConfigError, match="a list of scales .* or 'auto'"):
        steer.load_config(SMOKE, ["steering.scales=often"])


def test_a_run_with_scales_auto_calibrates_records_it_and_resumes_the_same(tmp_path,
                                                                          monkeypatch):
    # a small candidate grid and prompt set: the real calibration, in seconds
    monkeypatch.setattr(autoscale, "DEFAULT_SCALES", (0.1, 0.5))
    monkeypatch.setattr(autoscale, "DEFAULT_PROMPTS", 2)
    cfg = steer.load_config(SMOKE, [f"output_dir={tmp_path}", "steering.scales=auto",
                                    "seeds=[0]", "steering.random_controls=1",
                                    "generation.temperature=0"])
    run = steer.run(cfg, quiet=True)
    m = run.manifest
    cal = m.calibration
    s = cal["scale"]
    assert s in (0.1, 0.5) and cal["scales"] == [-s, -s / 2, 0.0, s / 2, s]
    assert cal["reused"] is False and m.status == "complete"
    assert sorted(set(run.results.scale)) == cal["scales"]
    assert run.config["steering"]["scales"] == cal["scales"]
    for name in cal["files"]:
        assert (run.path / name).is_file(), name
    assert json.loads((run.path / cal["files"][0]).read_text())["key"] == cal["key"]
    assert cfg.steering.scales == "auto"  # the caller's config is left as it was

    again = steer.run(cfg, quiet=True)
    assert again.manifest.calibration["reused"] is True
    assert again.manifest.calibration["scales"] == cal["scales"]
    assert again.manifest.cells.computed == 0 and again.manifest.cells.reused == 3 * 4 + 1


def test_the_examples_of_the_calibration_modules_run(monkeypatch):
    import steer.results.plots
    import steer.sweep.calibrate
    import steer.sweep.plan

    monkeypatch.chdir(ROOT)
    ran = 0
    for module, only in ((steer.sweep.calibrate, None), (autoscale, None),
                         (steer.sweep.plan, {"auto_scales"}),
                         (steer.results.plots, {"calibration_plot"})):
        for test in doctest.DocTestFinder().find(module):
            if not test.examples or (only and test.name.rsplit(".", 1)[-1] not in only):
                continue
            runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
            runner.run(test)
            assert runner.failures == 0, test.name
            ran += 1
    assert ran >= 15


@pytest.mark.integration
@pytest.mark.timeout(1800)  # builds the embedded vectors' cache when it runs first
def test_on_the_embedded_model_a_full_norm_breaks_the_text_and_a_twentieth_does_not(smol):
    from steer.vectors.corpus import load_corpus
    from steer.vectors.store import build_or_load

    cal = calibrate(smol, build_or_load(smol, load_corpus()), steer=["desperate"], layers=[12],
                    scales=[0.05, 1.0], prompts=calibration_prompts(4), readout_layer=16,
                    max_new_tokens=16, system_prompt="You are a helpful assistant.")
    t = cal.table.set_index(["scale", "vector"])
    for s in (-1.0, 1.0):  # FACTS.md: 1.0 of the median norm breaks the text
        for v in ("desperate", "random-0"):
            assert t.loc[(s, v)].ppl_ratio > 2 and not t.loc[(s, v)].fluent, cal.table
    assert t.loc[[(s, v) for s in (-0.05, 0.05) for v in ("desperate", "random-0")]
                 ].fluent.all(), cal.table
    assert (cal.recommendation["layer"], cal.recommendation["scale"]) == (12, 0.05)
