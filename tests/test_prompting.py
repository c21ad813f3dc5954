"""The prompting baseline (`steering.prompt_controls`): instructed conditions change the system
prompt and nothing else, run as rows of the same batches, and appear as their own rows."""

from __future__ import annotations

import pandas as pd
import pytest

import steer
from steer.sweep.config import SteeringSpec, default_instruction
from steer.sweep.plan import cell_keys, make_plan, make_units
from steer.tasks.base import UNSTEERED, Condition, Context


@pytest.fixture(scope="module")
def tiny():
    return steer.load_model("tiny-random")


def _ctx(model, system="You are a helpful assistant."):
    return Context(model=model, vectors=None, readout_layer=2, emotions=[], sampling=None,
                   system_prompt=system)


def _split(a: list[int], b: list[int]) -> tuple[int, int]:
    """Length of the common prefix and of the common suffix of two token lists."""
    pre = 0
    while pre < min(len(a), len(b)) and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < min(len(a), len(b)) - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    return pre, suf


@pytest.mark.parametrize("system", ["You are a helpful assistant.", None])
def test_instructed_rows_differ_only_inside_the_system_prompt(tiny, system):
    """Token-level: the instructed row's prompt equals the unsteered row's but for the
    instruction's tokens, which sit inside the system message; and it carries no steering."""
    from steer.tasks.generate import GenerateSpec

    task = GenerateSpec(name="g", prompts=["The tests keep failing.", "The server is down."])
    cond = Condition.instructed("desperate", "You feel desperate.")
    ctx = _ctx(tiny, system)
    keys, rows = task.rows(ctx, [UNSTEERED, cond], seed=0)
    tok = tiny.tokenizer
    for item in range(2):
        (base,) = [r for (i, c), r in zip(keys, rows) if i == item and c == UNSTEERED]
        (inst,) = [r for (i, c), r in zip(keys, rows) if i == item and c == cond]
        assert inst.interventions == () and base.interventions == ()
        a = tok(base.prompt, add_special_tokens=False).input_ids
        b = tok(inst.prompt, add_special_tokens=False).input_ids
        pre, suf = _split(a, b)
        assert pre + suf == len(a)  # the unsteered prompt is all there, the insertion between
        inserted = tok.decode(b[pre:len(b) - suf])
        assert inserted.strip() == "You feel desperate."
        head = tok.decode(b[:pre])
        # the insertion is in the system message: after its header, before its end
        assert head.startswith("<|im_start|>system\n")
        assert "<|im_end|>" not in head
        assert tok.decode(b[len(b) - suf:]).startswith("<|im_end|>")
        # with no system prompt of the run's, the template's default one is kept
        if system is None:
            assert tiny.default_system_prompt in head


def test_instructed_condition_is_not_unsteered_and_round_trips():
    c = Condition.instructed("calm", "You feel calm.")
    assert not c.is_unsteered and c.is_prompted and c.emotion == "calm"
    assert Condition.from_json(c.to_json()) == c
    assert Context(None, None, 2, [], None).interventions(c, seed=0) == ()
    assert UNSTEERED.to_json() is None


def test_default_sentences_cover_the_catalog():
    from steer.vectors.catalog import catalog

    sentences = {e: default_instruction(e) for e in catalog()}
    assert len(sentences) == 171
    assert all(s.startswith("You feel ") and s.endswith(".") for s in sentences.values())
    assert default_instruction("fear") == "You feel afraid."  # aliases resolve


def test_config_forms_and_errors(tmp_path):
    spec = SteeringSpec(vectors=["calm"], layers=[2], scales=[0.1],
                        prompt_controls={"desperate": "Act as if you were desperate.",
                                         "calm": None})
    assert spec.instructions() == {"desperate": "Act as if you were desperate.",
                                   "calm": "You feel calm."}
    cfg = steer.load_config("configs/smoke.yaml",
                            ["steering.prompt_controls=[desperate, calm]", "seeds=[0]"])
    plan = make_plan(cfg)
    prompted = [c for c in plan.conditions if c.is_prompted]
    assert [c.vector for c in prompted] == ["prompt:desperate", "prompt:calm"]
    # each instructed condition is one more computation, keyed by its sentence
    plain = make_plan(steer.load_config("configs/smoke.yaml", ["seeds=[0]"]))
    assert len(plan.unique_conditions) == len(plain.unique_conditions) + 2
    other = steer.load_config("configs/smoke.yaml",
                              ["steering.prompt_controls={desperate: Be desperate.}",
                               "seeds=[0]"])
    k1 = cell_keys(cfg, plan)
    k2 = cell_keys(other, make_plan(other))
    c1 = next(c for c in plan.unique_conditions if c.vector == "prompt:desperate")
    c2 = next(c for c in make_plan(other).unique_conditions if c.vector == "prompt:desperate")
    assert k1[("stress", c1, 0)] != k2[("stress", c2, 0)]
    # rows of the same batches: instructed conditions share units with the steered ones
    units = make_units(cfg, plan)
    assert any(any(c.is_prompted for c in u.conditions) and
               any(not c.is_prompted for c in u.conditions) for u in units)
    for bad, expected in [("steering.prompt_controls=[despair-ish]", "catalog"),
                          ("steering.prompt_controls=[calm, calmness]", "each emotion once"),
                          ("steering.prompt_controls={calm: ''}", "500 characters")]:
        with pytest.raises(steer.ConfigError) as e:
            steer.load_config("configs/smoke.yaml", [bad])
        assert expected in str(e.value) and "prompt_controls" in str(e.value)


def test_run_reports_instructed_rows_and_comparison(tmp_path, tiny):
    from steer.results.baselines import instructed_comparison

    cfg = steer.load_config("configs/smoke.yaml", [
        f"output_dir={tmp_path}", "seeds=[0]", "steering.prompt_controls=[desperate]"])
    run = steer.run(cfg, quiet=True, model=tiny)
    assert run.status == "complete"
    summary = pd.read_csv(run.path / "summary.csv")
    inst = summary[summary.vector == "prompt:desperate"]
    assert not inst.empty and set(inst.layer) == {-1} and set(inst.scale) == {0.0}
    results = pd.read_parquet(run.path / "results.parquet")
    table = instructed_comparison(results, ["readout.desperate"])
    assert set(table.scale) == {-0.2, 0.2} and set(table.emotion) == {"desperate"}
    assert set(table.relation) <= {"larger", "smaller", "within", "too few items"}
