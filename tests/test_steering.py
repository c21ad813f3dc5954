import pytest
import torch

from steer.errors import SteeringError
from steer.lm.directions import parse_expression, random_direction
from steer.lm.directions import unit_direction as direction
from steer.lm.steering import Intervention, capture, steer_rows, steering
from steer.vectors.store import EmotionVectors

TEXTS = ["The tests keep failing and the deadline is tonight.", "A quiet walk by the river."]


def _forward(model, ids, mask, layers=(2,)):
    with torch.no_grad(), capture(model, layers) as acts:
        logits = model.bridge(ids, attention_mask=mask)
    return logits, {k: v.clone() for k, v in acts.items()}


def test_patched_activation_is_original_plus_scaled_unit_vector(tiny, tiny_vectors):
    ids, mask = tiny.encode(TEXTS)
    _, clean = _forward(tiny, ids, mask)
    layer, scale = 2, 0.15
    iv = Intervention("desperate", layer, scale)
    with torch.no_grad(), steering(tiny, [iv], tiny_vectors):
        _, steered = _forward(tiny, ids, mask)
    v = tiny_vectors.vectors[tiny_vectors.index("desperate"), layer].float()
    unit = v / v.norm()
    assert torch.equal(direction("desperate", tiny_vectors, layer, tiny.d_model), unit)
    norm = float(tiny.resid_norms()[layer])
    expected = clean[layer] + unit * float(scale * norm)
    assert torch.equal(steered[layer], expected)
    # and the change has exactly the intended length at every position
    diff = (steered[layer] - clean[layer]).norm(dim=-1)
    assert torch.allclose(diff, torch.full_like(diff, scale * norm), rtol=1e-4)


def test_random_direction_has_unit_norm_and_is_seeded(tiny):
    a, b, c = random_direction(0, 64), random_direction(0, 64), random_direction(1, 64)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert abs(float(a.norm()) - 1.0) < 1e-6


def test_scale_zero_and_removed_hooks_leave_outputs_bit_identical(tiny, tiny_vectors):
    ids, mask = tiny.encode(TEXTS)
    before, _ = _forward(tiny, ids, mask)
    with torch.no_grad(), steering(tiny, [Intervention("calm", 2, 0.0)], tiny_vectors):
        zero, _ = _forward(tiny, ids, mask)
    with torch.no_grad(), steering(tiny, [Intervention("calm", 2, 0.5)], tiny_vectors):
        steered, _ = _forward(tiny, ids, mask)
    after, _ = _forward(tiny, ids, mask)
    assert torch.equal(before, zero)
    assert not torch.equal(before, steered)
    assert torch.equal(before, after)


def test_hooks_are_removed_when_the_body_raises(tiny, tiny_vectors):
    ids, mask = tiny.encode(TEXTS)
    before, _ = _forward(tiny, ids, mask)
    with pytest.raises(RuntimeError, match="boom"):
        with steering(tiny, [Intervention("calm", 1, 1.0)], tiny_vectors):
            raise RuntimeError("boom")
    after, _ = _forward(tiny, ids, mask)
    assert torch.equal(before, after)


def test_rows_carry_their_own_interventions(tiny, tiny_vectors):
    ids, mask = tiny.encode([TEXTS[0]] * 3)
    clean, _ = _forward(tiny, ids, mask)
    rows = [[], [Intervention("desperate", 2, 0.3)], [Intervention("random-0", 2, 0.3)]]
    with torch.no_grad(), steer_rows(tiny, rows, tiny_vectors):
        mixed, _ = _forward(tiny, ids, mask)
    assert torch.equal(mixed[0], clean[0])
    assert not torch.equal(mixed[1], clean[1])
    assert not torch.equal(mixed[1], mixed[2])
    with torch.no_grad(), steering(tiny, [Intervention("desperate", 2, 0.3)], tiny_vectors):
        alone, _ = _forward(tiny, ids[:1], mask[:1])
    assert torch.allclose(mixed[1], alone[0], atol=1e-5)


def test_positions_select_prompt_or_generated_tokens(tiny, tiny_vectors):
    ids, mask = tiny.encode(TEXTS[:1])
    _, clean = _forward(tiny, ids, mask)
    for positions, prompt_on, last_on, gen_on in [("all", True, True, True),
                                                  ("prompt", True, True, False),
                                                  ("generated", False, True, True)]:
        iv = Intervention("calm", 2, 0.3, positions)
        with torch.no_grad(), steering(tiny, [iv], tiny_vectors) as rs:
            _, got = _forward(tiny, ids, mask)
            changed = ~torch.isclose(got[2], clean[2]).all(dim=-1)[0]
            assert bool(changed[:-1].all()) == prompt_on and bool(changed[:-1].any()) == prompt_on
            assert bool(changed[-1]) == last_on
            rs.phase = "generated"
            _, got = _forward(tiny, ids, mask)
            assert bool((~torch.isclose(got[2], clean[2]).all(dim=-1)).any()) == gen_on


def test_parse_expression():
    assert parse_expression("desperate") == [(1.0, "desperate")]
    assert parse_expression("desperate - calm") == [(1.0, "desperate"), (-1.0, "calm")]
    assert parse_expression("0.5*happy + at ease") == [(0.5, "happy"), (1.0, "at ease")]
    assert parse_expression("grief-stricken - 2*calm") == [(1.0, "grief-stricken"),
                                                          (-2.0, "calm")]
    assert parse_expression("- calm") == [(-1.0, "calm")]
    for bad in ["", "   ", "3*", "+ -"]:
        with pytest.raises(SteeringError):
            parse_expression(bad)


def test_sum_of_vectors_is_normalized_combination():
    vecs = torch.zeros(2, 1, 4)
    vecs[0, 0, 0] = 3.0
    vecs[1, 0, 1] = 5.0
    ev = EmotionVectors(["desperate", "calm"], vecs)
    d = direction("desperate - calm", ev, 0, 4)
    assert torch.allclose(d, torch.tensor([1.0, -1.0, 0, 0]) / 2**0.5)
    with pytest.raises(KeyError):
        direction("happy", ev, 0, 4)
    with pytest.raises(SteeringError, match=r"sums to (\(nearly\) )?zero"):
        direction("0*calm", ev, 0, 4)
    assert torch.equal(direction("- calm", ev, 0, 4), torch.tensor([0.0, -1.0, 0, 0]))
