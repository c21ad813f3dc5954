"""Does the unsteered model do the task at all? Planted samples for each rule (a model that
follows the letter's position, one that reads the options, a coin flip; known answers; broken
code), the checks computed from what the tasks' real runs write, and the table and lines."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import steer
from steer.errors import TaskDataError
from steer.results.competence import (
    NOT_INTERPRETABLE,
    competence_lines,
    competence_table,
    competence_warnings,
    wilson,
)
from steer.tasks.base import UNSTEERED, Condition, Context, Sample
from steer.tasks.choice import ChoiceSpec, orders
from steer.tasks.code import CodeSpec
from steer.tasks.items import load_choice_items, load_probe_items
from steer.tasks.preference import PreferenceSpec

from .conftest import SHARED_DATA

EVALS = SHARED_DATA / "anthropic-evals"


def _choice(suite="reward_hacking", limit=24) -> ChoiceSpec:
    task = ChoiceSpec(name=suite, suite=suite, limit=limit)
    task.check()
    return task


def _samples(task: ChoiceSpec, p_by_order, mass=0.97, cond=UNSTEERED) -> list[Sample]:
    """One sample per item; `p_by_order(i, item)`: P(behaviour option) in each order."""
    out = []
    for i, item in enumerate(task.loaded()):
        ps = p_by_order(i, item)
        out.append(Sample(i, 0, cond, {task.metric: sum(ps) / 2, "option_mass": mass},
                          {"item_id": item.id, "p_by_order": ps}))
    return out


def _position(i, item, p_a=0.9):
    """Follows the letter: P(A) = p_a whatever option A is."""
    return [p_a if item.options[order[0]].behavior else 1 - p_a for order in orders(2)]


def test_wilson_interval_matches_the_closed_form_and_its_edges():
    lo, hi = wilson(2, 12)
    assert (round(lo, 3), round(hi, 3)) == (0.047, 0.448)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(5, 10)[0] < 0.5 < wilson(5, 10)[1]
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_a_model_following_the_letters_position_is_at_chance():
    task = _choice()
    c = task.competence(_samples(task, _position))
    assert c.at_chance
    assert c.checks["order_agreement"]["k"] == 0 and c.checks["order_agreement"]["n"] == 24
    assert c.checks["first_position"]["value"] == pytest.approx(0.9)
    assert c.checks["option_mass"]["value"] == pytest.approx(0.97)
    assert c.checks["margin"]["value"] == pytest.approx(0.8)  # decided, by the letter
    assert c.reason.startswith("at chance: options in the two orders agree on 0/24 items")
    assert "97% of the next-token mass on the option letters, 90% of it on (A)" in c.reason
    assert c.reason.endswith(NOT_INTERPRETABLE)
    assert "accuracy" not in c.checks  # reward_hacking has no known answers


def test_a_model_reading_the_options_does_the_task():
    task = _choice()
    # prefers the behaviour on even items, the other option on odd ones, in both orders, with
    # a letter bias on top that does not overturn the content
    c = task.competence(_samples(task, lambda i, item: [0.8, 0.6] if i % 2 else [0.3, 0.1]))
    assert not c.at_chance
    assert c.checks["order_agreement"]["value"] == 1.0
    assert c.checks["order_agreement"]["ci_low"] > 0.5
    assert c.reason.startswith("does the task: options in the two orders agree on 24/24 items")
    assert NOT_INTERPRETABLE not in c.reason


def test_a_coin_flip_is_at_chance():
    task = _choice(limit=40)
    rng = np.random.default_rng(0)
    c = task.competence(_samples(task, lambda i, item: [float(x) for x in rng.random(2)]))
    m = c.checks["order_agreement"]
    assert c.at_chance and 0.25 < m["value"] < 0.75 and m["ci_low"] < 0.5 < m["ci_high"]


def test_too_little_mass_on_the_letters_is_not_answering_in_the_format():
    task = _choice()
    c = task.competence(_samples(task, lambda i, item: [0.9, 0.9], mass=0.2))
    assert c.at_chance  # even though the content agrees in both orders
    assert c.reason.startswith("does not answer in the format: only 20% of the next-token mass")


def test_only_unsteered_and_finite_samples_are_read():
    task = _choice(limit=8)
    steered = _samples(task, lambda i, item: [0.9, 0.9], cond=Condition("calm", 2, 0.1))
    assert task.competence(steered) is None  # no unsteered sample: nothing to check
    base = _samples(task, _position)
    base[0] = Sample(0, 0, UNSTEERED, {task.metric: math.nan, "option_mass": math.nan},
                     {"p_by_order": [math.nan, math.nan]})
    c = task.competence(steered + base)
    assert c.checks["order_agreement"]["n"] == 7 and c.at_chance


def test_sycophancy_marks_the_factually_right_option_and_accuracy_reads_it():
    items = load_choice_items("sycophancy")
    assert all(len(it.right) == 1 and not it.options[it.right[0]].behavior for it in items)
    assert all(not it.right for it in load_choice_items("blackmail"))
    task = _choice("sycophancy", limit=20)
    honest = task.competence(_samples(task, lambda i, item: [0.1, 0.2]))
    assert honest.checks["accuracy"]["value"] == 1.0 and not honest.at_chance
    assert "right in the two orders on 20/20 known answers" in honest.reason
    # reliably sycophantic: always wrong, yet reading the content, so not at chance
    fawning = task.competence(_samples(task, lambda i, item: [0.9, 0.7]))
    assert fawning.checks["accuracy"]["value"] == 0.0 and not fawning.at_chance
    lost = task.competence(_samples(task, _position))
    assert lost.checks["accuracy"]["k"] == 0 and lost.at_chance


def test_three_options_use_every_order_and_chance_of_one_in_nine(tmp_path):
    f = tmp_path / "three.jsonl"
    f.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Pick {i}.", "options": [
        {"text": "a", "behavior": True, "correct": True}, {"text": "b", "behavior": False},
        {"text": "c", "behavior": False}]}) + "\n" for i in range(9)))
    task = ChoiceSpec(name="three", file=str(f))
    task.check()

    def sample(i, p_opts):
        return Sample(i, 0, UNSTEERED, {"p_three": 0.5, "option_mass": 0.9},
                      {"p_by_order": [0.5] * 3, "p_options": p_opts})

    reads = task.competence([sample(i, [[0.6, 0.3, 0.1]] * 3) for i in range(9)])
    assert not reads.at_chance and reads.checks["accuracy"]["value"] == 1.0
    assert "every order" in reads.reason and "chance 0.11" in reads.reason
    # first position wins in every order: a different option each time
    first = [[1.0 if j == order[0] else 0.0 for j in range(3)] for order in orders(3)]
    lost = task.competence([sample(i, first) for i in range(9)])
    assert lost.at_chance and lost.checks["order_agreement"]["k"] == 0


def test_known_answer_marks_are_validated(tmp_path):
    f = tmp_path / "s.jsonl"
    row = {"id": "x", "prompt": "q", "options": [{"text": "a", "behavior": True},
                                                  {"text": "b", "behavior": False}]}
    f.write_text(json.dumps(row) + "\n")
    assert load_choice_items(str(f))[0].right == ()
    row["options"][1]["correct"] = "yes"
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(TaskDataError, match=r"s.jsonl:1: 'correct' is true or false"):
        load_choice_items(str(f))
    row["options"][1]["correct"] = False
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(TaskDataError, match="marks no option true"):
        load_choice_items(str(f))


def test_known_answer_setting_marks_a_file_and_keys_no_cell():
    plain = ChoiceSpec(name="s", suite="blackmail")
    marked = ChoiceSpec(name="s", suite="blackmail", known_answer="other")
    assert plain.key() == marked.key()
    assert all(not it.options[it.right[0]].behavior for it in marked.loaded())
    flipped = ChoiceSpec(name="s", suite="blackmail", known_answer="behavior")
    assert all(it.options[it.right[0]].behavior for it in flipped.loaded())


@pytest.mark.skipif(not EVALS.is_dir(), reason="../shared/data/anthropic-evals absent")
def test_anthropic_self_awareness_evals_take_the_behaviour_as_the_known_answer():
    """In the self-awareness evals the behaviour is the true answer for a text model ("I'm
    unable to change your computer settings"); Anthropic's format itself marks no answer."""
    path = str(EVALS / "self-awareness-text-model.jsonl")
    assert all(not it.right for it in load_choice_items(path, limit=5))
    task = ChoiceSpec(name="aware", file=path, known_answer="behavior", limit=30)
    task.check()
    items = task.loaded()
    assert all(it.options[it.right[0]].behavior for it in items)
    c = task.competence(_samples(task, lambda i, item: [0.8, 0.9]))
    assert c.checks["accuracy"]["value"] == 1.0 and not c.at_chance


def test_the_probe_has_trivial_balanced_known_answers():
    probe = load_probe_items()
    assert len(probe) == 16 and len({it.prompt for it in probe}) == 16
    assert all(len(it.options) == 2 and len(it.right) == 1 for it in probe)
    assert sum(it.right == (0,) for it in probe) == 8  # the right option first in half


def test_the_probe_says_whether_a_model_at_chance_can_answer_ab_at_all():
    task = _choice(limit=12)
    probe_ok = {"p_right_by_order": [[0.9, 0.8]] * 15 + [[0.9, 0.2]], "option_mass": 0.95}
    probe_lost = {"p_right_by_order": [[0.9, 0.1], [0.1, 0.9]] * 8, "option_mass": 0.95}
    for probe, says in [(probe_ok, "it answers simple A/B questions, not these"),
                        (probe_lost, "it cannot answer A/B questions at all")]:
        samples = _samples(task, _position)
        samples[0].extra["probe"] = probe
        c = task.competence(samples)
        assert c.at_chance and says in c.reason
    assert c.checks["probe_accuracy"]["k"] == 0 and c.checks["probe_accuracy"]["n"] == 16


def _pairs_samples(n_acts, p_pair):
    """Preference samples whose `pairs` extra plants P(i) shown first and second."""
    out = []
    for i in range(n_acts):
        pairs = [[j, *p_pair(i, j), 0.96] for j in range(i + 1, n_acts)]
        out.append(Sample(i, 0, UNSTEERED, {"elo.x": 1000.0}, {"pairs": pairs, "elo": 1000.0}))
    return out


def test_preference_order_agreement():
    task = PreferenceSpec(name="prefs", suite="activities", limit=8)
    letters = task.competence(_pairs_samples(8, lambda i, j: (0.85, 0.15)))
    assert letters.at_chance and letters.checks["order_agreement"]["k"] == 0
    assert letters.checks["order_agreement"]["n"] == 28
    assert letters.checks["first_position"]["value"] == pytest.approx(0.85)
    assert letters.checks["margin"]["value"] == pytest.approx(0.7)
    assert "agree on 0/28 pairs" in letters.reason
    content = task.competence(_pairs_samples(8, lambda i, j: (0.7, 0.6) if (i + j) % 2 else
                                             (0.3, 0.2)))
    assert not content.at_chance and content.checks["order_agreement"]["value"] == 1.0
    assert task.competence([Sample(0, 0, UNSTEERED, {}, {"elo": 1.0})]) is None  # old cells


def _code_samples(classes_per_item):
    return [Sample(i, 0, UNSTEERED, {}, {"attempts": [{"class": c} for c in cls]})
            for i, cls in enumerate(classes_per_item)]


def test_code_is_flagged_when_most_attempts_are_broken():
    task = CodeSpec(name="code", suite="impossible")
    mostly = task.competence(_code_samples([["broken", "broken"], ["broken", "hack"],
                                            ["honest_fail"]]))
    assert mostly.at_chance and mostly.checks["runnable"]["k"] == 2
    assert mostly.checks["runnable"]["n"] == 5 and mostly.checks["hack"]["k"] == 1
    assert mostly.reason.startswith("mostly broken: 3/5 unsteered attempts broken")
    fine = task.competence(_code_samples([["honest_fail"], ["broken", "explained"], ["hack"]]))
    assert not fine.at_chance and fine.checks["runnable"]["value"] == 0.75
    assert task.competence(_code_samples([[]])) is None


def test_table_lines_and_warnings():
    choice, code = _choice(), CodeSpec(name="code", suite="impossible")
    other = ChoiceSpec(name="other", suite="blackmail", limit=8)
    table = competence_table(
        [choice, code, other, steer.tasks.generate.GenerateSpec(name="g", prompts=["x"])],
        {choice.name: _samples(choice, _position),
         code.name: _code_samples([["honest_fail"], ["hack"]]),
         other.name: _samples(other, lambda i, item: [0.9, 0.8])})
    assert list(table.task) == ["reward_hacking", "code", "other"]  # generate: no check
    assert list(table.at_chance) == [True, False, False]
    assert table.loc[0, "order_agreement_n"] == 24 and table.loc[1, "runnable"] == 1.0
    assert math.isnan(table.loc[1, "order_agreement"])
    (warning,) = competence_warnings(table)
    assert warning.startswith("reward_hacking: at chance: options in the two orders agree")
    assert warning.endswith("; steering effects on this task are not interpretable")
    lines = competence_lines(table)
    assert lines[1].startswith("## ") and f"- **reward_hacking**: {table.reason[0]}" in lines
    assert lines[-2:] == [f"- code: {table.reason[1]}", f"- other: {table.reason[2]}"]
    assert competence_table([code], {}).empty


# ---------------------------------------------------------------- what the real runs write


def _ctx(model):
    return Context(model=model, vectors=None, readout_layer=2, emotions=[], sampling=None)


def test_choice_run_keeps_the_probe_with_the_unsteered_model_only(tiny, tiny_vectors):
    task = _choice(limit=3)
    ctx = Context(tiny, tiny_vectors, 2, [], None)
    steered = Condition("desperate", 2, 0.5)
    out = task.run(ctx, [UNSTEERED, steered], seed=0)
    (first,) = [o for o in out if "probe" in o.extra]
    assert first.item == 0 and first.cond.is_unsteered
    probe = first.extra["probe"]
    assert len(probe["p_right_by_order"]) == 16
    assert all(len(ps) == 2 and all(0 < p < 1 for p in ps) for ps in probe["p_right_by_order"])
    assert 0 <= probe["option_mass"] <= 1  # random weights spread their mass widely
    # the probe rows run apart: the items' numbers are those of a run without the probe
    alone = task.run(ctx, [steered], seed=0)
    assert [o.metrics for o in alone] == [o.metrics for o in out if o.cond == steered]
    c = task.competence(out)
    assert c.checks["order_agreement"]["n"] == 3 and c.checks["probe_accuracy"]["n"] == 16
    assert c.at_chance  # random weights read nothing


def test_preference_run_keeps_each_pair_in_both_orders(tiny, tiny_vectors):
    task = PreferenceSpec(name="prefs", suite="activities", limit=4)
    task.check()
    ctx = Context(tiny, tiny_vectors, 2, [], None)
    out = task.run(ctx, [UNSTEERED, Condition("desperate", 2, 0.5)], seed=0)
    base = [o for o in out if o.cond.is_unsteered]
    pairs = [p for o in base for p in o.extra["pairs"]]
    assert len(pairs) == 6 and all("pairs" not in o.extra for o in out if o not in base)
    for o in base:
        assert all(j > o.item for j, *_ in o.extra["pairs"])
    # the Elo input is the mean of the two orders: P(i) shown first and second
    assert all(0 < p_a < 1 and 0 < p_b < 1 and 0 <= m <= 1 for _, p_a, p_b, m in pairs)
    assert task.competence(out).checks["order_agreement"]["n"] == 6


@pytest.mark.integration
def test_competence_of_the_embedded_model_on_a_choice_suite(smol):
    """The real measures of SmolLM2-135M-Instruct, unsteered, on 4 reward_hacking items and
    the probe (8 + 32 forward-pass rows)."""
    task = _choice(limit=4)
    out = task.run(Context(smol, None, 16, [], None, batch_size=16), [UNSTEERED], seed=0)
    c = task.competence(out)
    print(c.reason)
    agreement, mass = c.checks["order_agreement"], c.checks["option_mass"]
    assert agreement["n"] == 4 and c.checks["probe_accuracy"]["n"] == 16
    assert 0.5 < mass["value"] <= 1  # it answers with a letter
    assert c.at_chance == (agreement["ci_low"] <= 0.5)
    assert c.reason.startswith("at chance" if c.at_chance else "does the task")
