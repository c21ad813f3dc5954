"""Non-finite numbers are flagged, never dropped, and never contagious (issue 13, item 4).

An exploding condition (steering by an infinite scale makes its rows' logits and activations
NaN) next to ordinary ones: its samples are flagged `nonfinite`, every other row is exactly what
it is in a run without that condition, and the summary counts the values it could not average.
"""

import io
import json
import math

import pandas as pd
import pytest

import steer
from steer.lm.decode import GenRow, Sampling, generate_rows
from steer.tasks.base import UNSTEERED, Condition, Context, Sample
from steer.tasks.choice import ChoiceSpec
from steer.tasks.code import CodeSpec
from steer.tasks.generate import GenerateSpec
from steer.tasks.preference import PreferenceSpec
from steer.tasks.readout import ReadoutSpec

BOOM = Condition("desperate", 2, math.inf)  # inf x the median norm: NaN from layer 2 on
FINE = [UNSTEERED, Condition("desperate", 2, 0.2), Condition("calm", 1, -0.3)]
PROMPTS = ["The tests keep failing.", "The server is down and customers are calling."]


def context(model, vectors, temperature: float) -> Context:
    # one batch holds every row, with or without the exploding condition: how rows split into
    # batches changes padding widths and so the last bits of the floats, NaN or not
    return Context(model, vectors, readout_layer=3, emotions=["desperate", "calm"],
                   sampling=Sampling(6, temperature, 0.95), batch_size=64)


def by_cond(samples: list[Sample]) -> dict:
    out: dict = {}
    for s in samples:
        out.setdefault(s.cond, []).append(s.to_json())
    return out


@pytest.mark.parametrize("decode", ["dynamic", "static"])
def test_sampling_from_a_nan_row_neither_raises_nor_touches_the_other_rows(
        tiny, tiny_vectors, decode):
    """Before: torch.multinomial raised on the NaN row and failed the whole batch."""
    prompt = tiny.format_prompt(PROMPTS[0])
    boom = (steer.Intervention("desperate", 2, math.inf),)
    rows = [GenRow(prompt, (), 1), GenRow(prompt, boom, 2), GenRow(prompt, (), 3)]
    s = Sampling(6, 0.7, 0.95)
    old, tiny.decode = tiny.decode, decode
    try:
        mixed = generate_rows(tiny, rows, tiny_vectors, s, batch_size=8)
        alone = generate_rows(tiny, [rows[0], rows[2]], tiny_vectors, s, batch_size=8)
    finally:
        tiny.decode = old
    assert [mixed[0], mixed[2]] == alone
    assert not alone[0].nonfinite and not alone[1].nonfinite and len(alone[0].ids) == 6
    assert mixed[1].nonfinite and mixed[1].ids == [] and mixed[1].text == ""
    assert mixed[1].stopped is False


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_generate_flags_the_exploding_rows_and_leaves_the_rest_bit_identical(
        tiny, tiny_vectors, temperature):
    task = GenerateSpec(name="g", prompts=PROMPTS)
    ctx = context(tiny, tiny_vectors, temperature)
    clean = by_cond(task.run(ctx, FINE, seed=0))
    mixed = by_cond(task.run(ctx, [FINE[0], BOOM, *FINE[1:]], seed=0))
    for cond in FINE:  # every other row, the unsteered baseline included, exactly as without
        assert mixed[cond] == clean[cond]
        assert all("nonfinite" not in s for s in clean[cond])
    boom = mixed[BOOM]
    assert len(boom) == len(PROMPTS)
    for s in boom:
        assert s["nonfinite"] is True
        assert s["extra"]["text"] == "" and s["extra"]["n_tokens"] == 0
        assert set(s["metrics"]) == set(clean[UNSTEERED][0]["metrics"])
        assert all(math.isnan(v) for v in s["metrics"].values())


@pytest.mark.parametrize("make", [
    lambda: ReadoutSpec(name="r", prompts=PROMPTS),
    lambda: ChoiceSpec(name="c", suite="blackmail", limit=2),
    lambda: PreferenceSpec(name="p", limit=4),
    lambda: CodeSpec(name="k", limit=1, max_new_tokens=8),
], ids=["readout", "choice", "preference", "code"])
def test_scoring_tasks_flag_the_exploding_condition_only(tiny, tiny_vectors, make):
    task = make()
    task.check()
    ctx = context(tiny, tiny_vectors, 0.7)
    clean = by_cond(task.run(ctx, FINE, seed=0))
    mixed = by_cond(task.run(ctx, [*FINE[:2], BOOM, FINE[2]], seed=0))
    for cond in FINE:
        assert mixed[cond] == clean[cond]
    assert mixed[BOOM] and all(s["nonfinite"] is True for s in mixed[BOOM])
    assert all(math.isnan(v) for s in mixed[BOOM] for v in s["metrics"].values())


def test_sample_flag_round_trips_and_is_found_in_metrics():
    assert Sample(0, 0, UNSTEERED, {"m": 1.0}).nonfinite is False
    for bad in (math.nan, math.inf, -math.inf, None):
        assert Sample(0, 0, UNSTEERED, {"ok": 1.0, "m": bad}).nonfinite is True
    flagged = Sample(0, 0, UNSTEERED, {"m": 1.0}, nonfinite=True)  # set by the task
    back = Sample.from_json(json.loads(json.dumps(flagged.to_json())), UNSTEERED)
    assert back.nonfinite is True and back.metrics == {"m": 1.0}
    assert "nonfinite" not in Sample(0, 0, UNSTEERED, {"m": 1.0}).to_json()


def results_frame(values_by_scale: dict[float, list[float]]) -> pd.DataFrame:
    rows = []
    for scale, values in values_by_scale.items():
        for item, v in enumerate(values):
            rows.append(dict(task="t", item=item, vector="calm", layer=2, scale=scale, seed=0,
                             metric="m", value=v))
    return pd.DataFrame(rows)


def test_summary_counts_nonfinite_values_and_never_averages_them():
    from steer.results.tables import summarize

    res = results_frame({0.0: [1.0, 2.0, 3.0], 0.5: [1.0, math.nan, math.inf, 5.0],
                         9.0: [math.nan, -math.inf]})
    s = summarize(res, n_boot=200).set_index("scale")
    assert list(s.columns[-2:]) == ["n", "n_nonfinite"]
    assert (s.loc[0.0, "mean"], s.loc[0.0, "n"], s.loc[0.0, "n_nonfinite"]) == (2.0, 3, 0)
    assert (s.loc[0.5, "mean"], s.loc[0.5, "n"], s.loc[0.5, "n_nonfinite"]) == (3.0, 2, 2)
    assert math.isfinite(s.loc[0.5, "ci_low"]) and math.isfinite(s.loc[0.5, "ci_high"])
    # all values non-finite: the condition keeps its row instead of vanishing
    assert s.loc[9.0, "n"] == 0 and s.loc[9.0, "n_nonfinite"] == 2
    assert math.isnan(s.loc[9.0, "mean"]) and list(s.index) == [0.0, 0.5, 9.0]


def test_effects_leave_out_infinite_values():
    from steer.results.tables import effects

    finite = results_frame({0.0: [1.0, 2.0, 3.0], 1.0: [2.0, 3.0, 4.0]})
    # a fourth item whose steered value is inf: its slope would be inf and so the mean's
    with_inf = pd.concat([finite, results_frame({0.0: [1.0], 1.0: [math.inf]}).assign(item=3)])
    a, b = effects(finite, n_boot=200), effects(with_inf, n_boot=200)
    assert a.slope.iloc[0] == pytest.approx(1.0) and b.slope.iloc[0] == a.slope.iloc[0]
    assert math.isfinite(b.slope_high.iloc[0]) and math.isfinite(b.diff_top.iloc[0])


def test_report_line_appears_only_when_values_were_nonfinite():
    from steer.results.report import nonfinite_note
    from steer.results.tables import summarize

    clean = summarize(results_frame({0.0: [1.0, 2.0], 0.5: [1.0, 2.0]}), n_boot=50)
    assert clean.n_nonfinite.sum() == 0 and nonfinite_note(clean) is None
    bad = summarize(results_frame({0.0: [1.0, 2.0], 0.5: [math.nan, math.inf, 1.0]}), n_boot=50)
    note = nonfinite_note(bad)
    assert note.startswith("2 values were NaN/inf in 1 condition and left out of the means")
    assert "n_nonfinite in summary.csv" in note


CONFIG = """\
name: boom
model: {name: tiny-random}
steering: {vectors: [desperate], layers: [2], scales: [0.0, 0.2], random_controls: 0}
readout: {layer: 3}
tasks:
  - {name: stress, prompts: ["The tests keep failing.", "The server is down."]}
generation: {max_new_tokens: 4, batch_size: 64, temperature: 0.7}
seeds: [0]
"""


def test_a_run_with_an_exploding_condition_completes_flags_and_counts_it(tmp_path, tiny):
    """Through steer.run (worker, cells, aggregation, report): the config's scales are checked
    to lie in -10..10, so the infinite one is put in after validation."""
    from rich.console import Console

    from steer.results.report import terminal_tables

    (tmp_path / "boom.yaml").write_text(CONFIG)
    cfg = steer.load_config(tmp_path / "boom.yaml", [f"output_dir={tmp_path}"])
    boom = cfg.model_copy(update={"steering": cfg.steering.model_copy(
        update={"scales": [0.0, 0.2, math.inf]})})
    clean = steer.run(cfg, run_dir=tmp_path / "clean", quiet=True, model=tiny)
    mixed = steer.run(boom, run_dir=tmp_path / "mixed", quiet=True, model=tiny)
    assert mixed.status == "complete" and mixed.failures == []

    res, ref = mixed.results, clean.results
    finite = res[res.scale != math.inf].reset_index(drop=True)
    assert finite.equals(ref)  # the baseline and the other scale, to the last bit
    exploded = res[res.scale == math.inf]
    n_metrics = ref.metric.nunique()
    assert len(exploded) == 2 * n_metrics and exploded.value.isna().all()  # kept, not dropped

    summary = mixed.summary
    inf_rows = summary[summary.scale == math.inf]
    assert len(inf_rows) == n_metrics
    assert (inf_rows.n == 0).all() and (inf_rows.n_nonfinite == 2).all()
    assert inf_rows["mean"].isna().all()
    rest = summary[summary.scale != math.inf].reset_index(drop=True)
    assert (rest.n_nonfinite == 0).all()
    assert rest.drop(columns="n_nonfinite").equals(clean.summary.drop(columns="n_nonfinite"))

    samples = [json.loads(line) for line in
               (mixed.path / "samples.jsonl").read_text().splitlines()]
    assert sorted((s["scale"] == math.inf, s["nonfinite"]) for s in samples) == [
        (False, False)] * 4 + [(True, True)] * 2
    note = (f"{2 * n_metrics} values were NaN/inf in 1 condition and left out of the means "
            "(n_nonfinite in summary.csv")
    assert note in (mixed.path / "report.md").read_text()
    assert "NaN/inf" not in (clean.path / "report.md").read_text()
    console = Console(width=200, file=io.StringIO())
    for table in terminal_tables(summary, mixed.effects, ["desperate"]):
        console.print(table)
    assert any(line.startswith(note) for line in console.file.getvalue().splitlines())
    assert not any("NaN/inf" in str(t) for t in
                   terminal_tables(clean.summary, clean.effects, ["desperate"]))


def test_last_bit_differences_in_the_logits_do_not_change_sampled_tokens():
    """Why the code task's unsteered row changed from its 2nd token on when the exploding row
    joined its batch, though no NaN reached it: a batch of 4 rows gives logits that differ from
    a batch of 3 in the last bits (the CPU's matrix kernels depend on the row count), and the
    sampler drew by rank in the sorted nucleus, where such a difference reorders near-equal
    probabilities. Logits with a block of near-ties one ulp apart (as in the random tiny
    model's near-flat rows), each logit moved by one ulp up or down: every seed must draw the
    same token from both. (The rest lies well apart, so that which tokens make the nucleus
    does not change.)"""
    import torch

    from steer.lm.decode import _pick

    gen = torch.Generator().manual_seed(0)
    s = Sampling(1, 0.7, 0.95)
    # the nucleus found among the top 1024 tokens; a wider one (the full sort)
    for near, apart in ((300, 700), (600, 2400)):
        ties = 1.0 + torch.randperm(near, generator=gen).float() * 2.0**-23  # 1 ulp apart
        flat = torch.cat([ties, torch.linspace(-2.0, 0.0, apart)])
        flat = flat[torch.randperm(near + apart, generator=gen)].expand(64, -1)
        up = torch.rand(flat.shape, generator=gen) < 0.5
        moved = torch.where(up, flat.nextafter(torch.tensor(9.0)),
                            flat.nextafter(torch.tensor(-9.0)))
        a = _pick(flat, [torch.Generator().manual_seed(i) for i in range(64)], s)
        b = _pick(moved, [torch.Generator().manual_seed(i) for i in range(64)], s)
        assert a.tolist() == b.tolist()
        assert len(set(a.tolist())) > 48  # still sampling: other seeds, other tokens


def test_sampling_draws_the_nucleus_in_proportion():
    """The draw keyed by token id is still nucleus sampling: tokens past top_p never come,
    the others as often as their renormalized probabilities say."""
    import torch

    from steer.lm.decode import _pick

    p = torch.tensor([0.15, 0.05, 0.5, 0.3])  # top_p 0.9 keeps 0.5, 0.3, 0.15
    n = 4000
    got = _pick(p.log().expand(n, -1), [torch.Generator().manual_seed(i) for i in range(n)],
                Sampling(1, 1.0, 0.9))
    freq = torch.bincount(got, minlength=4).double() / n
    assert freq[1] == 0
    assert torch.allclose(freq, torch.tensor([0.15, 0.0, 0.5, 0.3], dtype=torch.float64) / 0.95,
                          atol=0.03)
