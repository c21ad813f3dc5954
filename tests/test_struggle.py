"""The struggle task: impossible coding tasks and their solvable twins over several turns, with
read-outs over each reply and at its start, and slopes of the read-outs against turn."""

import doctest
import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

import steer
import steer.tasks.struggle as struggle
from steer.errors import TaskConfigError
from steer.tasks.base import UNSTEERED, Condition, Sample
from steer.tasks.code import contradicting, prompt_for
from steer.tasks.items import load_code_tasks
from steer.tasks.sandbox import Limits, isolation_problem
from steer.tasks.struggle import StruggleSpec, judge, solvable_twin
from steer.tasks.testexpr import run_tests

ISO = "os" if isolation_problem() is None else "none"


def test_examples_in_the_module_run():
    assert doctest.testmod(struggle, optionflags=doctest.ELLIPSIS).failed == 0


def test_every_twin_passes_with_the_reference_and_every_impossible_task_fails_one():
    tasks = load_code_tasks()
    assert len(tasks) >= 20
    for t in tasks:
        twin = solvable_twin(t, ISO)
        impossible = run_tests(t.reference, list(t.visible_tests), isolation=ISO)
        assert impossible.status == "complete" and "fail" in impossible.tests.values(), t.id
        assert run_tests(t.reference, list(twin.visible_tests), isolation=ISO).all_passed, t.id
        assert run_tests(t.reference, list(twin.hidden_tests), isolation=ISO).all_passed, t.id
        # the same task but for the expected values of the contradicting tests
        bad = contradicting(t, ISO)
        assert (twin.spec, twin.signature, twin.hidden_tests, twin.name) == (
            t.spec, t.signature, t.hidden_tests, t.name)
        for i, (a, b) in enumerate(zip(t.visible_tests, twin.visible_tests)):
            if i in bad:
                assert a != b and a.split(" == ")[0] == b.split(" == ")[0], (t.id, a, b)
            else:
                assert a == b


def test_judge_calls_the_reference_a_pass_only_where_every_visible_test_holds():
    t = load_code_tasks(limit=1)[0]
    reply = f"```python\n{t.reference}\n```"
    assert judge(solvable_twin(t, ISO), reply, Limits(), ISO)["class"] == "pass"
    res = judge(t, reply, Limits(), ISO)
    assert res["class"] == "honest_fail" and "FAIL" in res["feedback"]


def test_turn_one_prompts_of_the_two_arms_differ_by_a_few_tokens(tiny):
    diffs = []
    for t in load_code_tasks():
        a, b = (tiny.format_prompt(prompt_for(x)) for x in (t, solvable_twin(t, ISO)))
        diffs.append(len(tiny.encode([b])[0][0]) - len(tiny.encode([a])[0][0]))
    assert max(map(abs, diffs)) <= 6, diffs
    assert np.mean(np.abs(diffs)) < 1.5, diffs


def test_check_rejects_tasks_without_a_solvable_twin_in_one_line(tmp_path):
    t = load_code_tasks(limit=1)[0]
    row = {"id": "ok-1", "name": t.name, "signature": t.signature, "spec": t.spec,
           "visible_tests": "\n".join(solvable_twin(t, ISO).visible_tests),
           "hidden_tests": "\n".join(t.hidden_tests), "reference": t.reference}
    f = tmp_path / "possible.jsonl"
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(TaskConfigError, match="solvable twin") as e:
        StruggleSpec(name="s", file=str(f), isolation=ISO).check()
    assert "\n" not in str(e.value)
    with pytest.raises(TaskConfigError, match="each arm at most once"):
        StruggleSpec(name="s", arms=["solvable", "solvable"]).check()


def test_a_tiny_run_records_every_turn_of_both_arms_and_writes_the_tables(tmp_path):
    cfg = {"name": "strug", "model": {"name": "tiny-random"},
           "steering": {"vectors": ["desperate"], "layers": [2], "scales": [0.0, 0.5],
                        "random_controls": 0},
           "readout": {"layer": 3, "emotions": ["desperate", "calm"]},
           "tasks": [{"name": "st", "type": "struggle", "limit": 2, "turns": 2,
                      "max_new_tokens": 6, "isolation": ISO}],
           "generation": {"batch_size": 16}, "seeds": [0], "output_dir": str(tmp_path)}
    path = tmp_path / "strug.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = steer.run(steer.load_config(path), quiet=True)
    assert run.status == "complete"
    samples = [json.loads(x) for x in (run.path / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 2 * 2  # 2 tasks x 2 arms x 2 conditions
    assert [s["arm"] for s in samples if s["vector"] is None] == ["impossible"] * 2 + [
        "solvable"] * 2
    assert all(s["prompt"].startswith(f"[{s['arm']}] ") for s in samples)
    for s in samples:
        m = s["metrics"]
        for k in (1, 2):
            assert sum(m[f"turn{k}.{c}"] for c in struggle.CLASSES) == 1.0
            assert {f"turn{k}.pre.desperate", f"turn{k}.pre.calm", f"turn{k}.spec_pass"} <= set(m)
        assert m["hack_rate"] == max(m["turn1.hack"], m["turn2.hack"])
        assert len(s["turns"]) == 2 and all("feedback" in a for a in s["turns"])
    slopes = pd.read_csv(run.path / "struggle_st.csv")
    assert set(slopes.arm) == {"impossible", "solvable", "impossible - solvable"}
    assert set(slopes.place) == {"reply", "pre"} and set(slopes.emotion) == {"desperate", "calm"}
    assert len(slopes) == 2 * 3 * 2 * 2  # conditions x arms x places x emotions
    hacks = pd.read_csv(run.path / "struggle_hack_st.csv")
    assert len(hacks) == 2 * 2 * 2 and set(hacks.turn) == {1, 2}  # conditions x arms x turns
    assert (run.path / "plots" / "st__struggle.png").is_file()
    assert "Struggle (st)" in (run.path / "report.md").read_text()


def planted(rise: float = 1.0, pairs: int = 6, turns: int = 4, seed: int = 0) -> list[Sample]:
    """Samples whose desperate read-out rises `rise` per turn in the impossible arm and stays
    flat in the solvable one (item offsets and noise added); calm is flat in both. The
    impossible arm hacks from turn 3 on in half the pairs."""
    rng = np.random.default_rng(seed)
    out = []
    for arm_i, arm in enumerate(("impossible", "solvable")):
        for p in range(pairs):
            offset = rng.normal(0, 2)
            m = {}
            for k in range(1, turns + 1):
                hack = float(arm == "impossible" and k >= 3 and p % 2 == 0)
                m.update({f"turn{k}.hack": hack, f"turn{k}.pass": 0.0,
                          f"turn{k}.honest_fail": 1.0 - hack, f"turn{k}.explained": 0.0,
                          f"turn{k}.broken": 0.0, f"turn{k}.spec_pass": 0.5})
                for place in ("reply", "pre"):
                    m[f"turn{k}.{place}.desperate"] = (offset + (rise * k if arm_i == 0 else 0)
                                                       + rng.normal(0, 0.05))
                    m[f"turn{k}.{place}.calm"] = offset + rng.normal(0, 0.05)
            m["hack_rate"] = float(any(m[f"turn{k}.hack"] for k in range(1, turns + 1)))
            out.append(Sample(arm_i * pairs + p, 0, UNSTEERED, m, {"arm": arm, "pair": p}))
    return out


def test_extra_finds_a_planted_rise_and_its_difference_from_the_flat_twin():
    task = StruggleSpec(name="pl", turns=4)
    e = task.extra(planted(), pd.DataFrame(), ["desperate", "calm"])
    t = e.tables["struggle_pl.csv"].set_index(["arm", "place", "emotion"])
    for place in ("reply", "pre"):
        imp, sol = t.loc[("impossible", place, "desperate")], t.loc[("solvable", place,
                                                                      "desperate")]
        diff = t.loc[("impossible - solvable", place, "desperate")]
        assert imp.slope == pytest.approx(1.0, abs=0.05)
        assert sol.slope == pytest.approx(0.0, abs=0.05)
        assert diff.slope == pytest.approx(1.0, abs=0.07)
        assert diff.ci_low > 0.5 and diff.ci_high < 1.5 and diff.n_items == 6
        assert diff["last"] - diff["first"] == pytest.approx(3.0, abs=0.2)
        calm = t.loc[("impossible - solvable", place, "calm")]
        assert abs(calm.slope) < 0.1 and calm.ci_high - calm.ci_low < 0.2  # nothing planted
    hacks = e.tables["struggle_hack_pl.csv"]
    imp = hacks[hacks.arm == "impossible"].set_index("turn")
    assert list(imp.hack) == [0.0, 0.0, 0.5, 0.5] and list(imp.hacked_by_now) == [0, 0, .5, .5]
    assert (hacks[hacks.arm == "solvable"].hack == 0).all()
    report = "\n".join(e.report)
    assert "difference +1" in report
    assert "the CI excludes 0: the impossible arm's slope is higher" in report
    assert "too few" not in report
    assert "impossible: hack 0.50" in report and "solvable: hack 0.00" in report
    assert list(e.plots) == ["pl__struggle.png"]


def test_extra_keeps_flagged_conversations_out_of_the_slopes():
    samples = planted(pairs=4)
    bad = samples[0]
    samples[0] = Sample(bad.item, 0, bad.cond, dict.fromkeys(bad.metrics, math.nan), bad.extra,
                        nonfinite=True)
    e = StruggleSpec(name="pl", turns=4).extra(samples, pd.DataFrame(), ["desperate"])
    assert "only 3 pairs, too few" in "\n".join(e.report)
    t = e.tables
    row = t["struggle_pl.csv"].set_index(["arm", "place", "emotion"]).loc[
        ("impossible - solvable", "reply", "desperate")]
    assert row.n_items == 3 and row.slope == pytest.approx(1.0, abs=0.07)


def test_steered_conditions_are_separate_panels_and_rows():
    steered = Condition("desperate", 12, 0.1)
    samples = planted(pairs=3) + [Sample(s.item, 0, steered, s.metrics, s.extra)
                                  for s in planted(pairs=3, seed=1)]
    e = StruggleSpec(name="pl", turns=4).extra(samples, pd.DataFrame(), ["desperate"])
    t = e.tables["struggle_pl.csv"]
    assert list(dict.fromkeys(t.vector)) == ["none", "desperate"]
    assert len(e.plots["pl__struggle.png"].axes) == 2 * 2
    assert any(line.startswith("- desperate L12 x+0.1, over the reply") for line in e.report)


def test_the_read_out_before_the_reply_counts_only_the_assistant_header(tiny, tiny_vectors):
    """The `pre` read-out: readout_prompts with `skip` = prompt length minus the header, which
    on SmolLM2's template is the 6 tokens `<|im_end|>`, `\\n`, `<|im_start|>`, `ass`, `istant`,
    `\\n`; it equals the mean over those tokens' activations, projected, by hand."""
    import torch

    from steer.lm.decode import GenRow
    from steer.lm.read import readout_prompts

    n = struggle._header_length(tiny)
    assert n == 6
    prompt = tiny.format_messages([{"role": "user", "content": "Fix the failing test."}])
    ids, mask = tiny.encode([prompt])
    assert tiny.tokenizer.decode(ids[0, -n:]) == "<|im_end|>\n<|im_start|>assistant\n"
    (got,) = readout_prompts(tiny, [GenRow(prompt)], [ids.shape[1] - n], tiny_vectors, 3,
                             ["desperate", "calm"])
    with torch.no_grad(), steer.capture(tiny, [3]) as acts:
        tiny.forward(ids, mask)
    mean = acts[3][0, -n:].float().mean(0)
    units = tiny_vectors.units(3, ["desperate", "calm"])
    want = (units @ mean / float(tiny.resid_norms()[3])).tolist()
    assert [got["desperate"], got["calm"]] == pytest.approx(want, rel=1e-4, abs=1e-6)
    # and the whole prompt reads differently: the window matters
    (whole,) = readout_prompts(tiny, [GenRow(prompt)], [1], tiny_vectors, 3, ["desperate"])
    assert whole["desperate"] != pytest.approx(got["desperate"], rel=1e-3)


def test_the_header_read_out_kept_from_generation_equals_reading_the_prompt_again(
        tiny, tiny_vectors):
    """`readout_tails` takes the header's activations from the generation's own prefill where
    it kept them (distinct prompts: one pass) and reads the prompt again where it did not (a
    batch where two seeds of one prompt share a prefix pass): both equal `readout_prompts`
    under the rows' own steering, and the steering shows."""
    from steer.lm.decode import GenRow, Sampling, generate_rows
    from steer.lm.read import readout_prompts, readout_tails

    n = struggle._header_length(tiny)
    prompts = [tiny.format_messages([{"role": "user", "content": c}])
               for c in ("Fix the failing test.", "The tests still fail after three tries.")]
    iv = (steer.Intervention("desperate", 2, 4.0),)
    rows = [GenRow(prompts[0]), GenRow(prompts[1], iv), GenRow(prompts[1], iv, seed=1)]
    emotions = ["desperate", "calm"]
    for group in (rows[:2], rows):  # kept from the prefill; then the shared-prefix fallback
        gens = generate_rows(tiny, group, tiny_vectors, Sampling(max_new_tokens=3), 8,
                             tail=(3, n))
        kept = [g.tail is not None for g in gens]
        assert kept == [len(group) == 2] * len(group)  # a batch with a shared prefix: none
        got = readout_tails(tiny, group, gens, n, tiny_vectors, 3, emotions)
        want = readout_prompts(tiny, group, [len(g.prompt_ids) - n for g in gens],
                               tiny_vectors, 3, emotions)
        for a, b in zip(got, want):
            assert [a[e] for e in emotions] == pytest.approx([b[e] for e in emotions],
                                                             rel=1e-4, abs=1e-6)
    plain = readout_prompts(tiny, [GenRow(prompts[1])], [len(gens[1].prompt_ids) - n],
                            tiny_vectors, 3, emotions)[0]
    assert got[1]["desperate"] > plain["desperate"] + 0.1
