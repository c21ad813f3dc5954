import math
import shutil

import pytest
import torch

from steer.lm.decode import GenRow, Sampling
from steer.lm.decode import generate_rows as generate
from steer.lm.read import score
from steer.lm.steering import Intervention

from .conftest import generate_fast_and_bridge

PROMPTS = ["Hi.", "My code is due in one hour and the tests keep failing. What should I do?",
           "Tell me about the sea."]


def _rows(model, prompts, seed=0, ivs=()):
    return [GenRow(model.format_prompt(p), tuple(ivs), seed) for p in prompts]


def test_padded_rows_give_the_same_tokens_as_each_row_alone(tiny, tiny_vectors):
    greedy = Sampling(max_new_tokens=12, temperature=0.0)
    iv = [Intervention("desperate", 1, 0.2)]
    batched = generate(tiny, _rows(tiny, PROMPTS, ivs=iv), tiny_vectors, greedy, batch_size=8)
    lengths = {len(r.prompt_ids) for r in batched}
    assert len(lengths) == 3, "prompts must differ in length for this test to mean anything"
    for p, got in zip(PROMPTS, batched):
        alone = generate(tiny, _rows(tiny, [p], ivs=iv), tiny_vectors, greedy, batch_size=1)[0]
        assert got.ids == alone.ids
        assert got.prompt_ids == alone.prompt_ids


def test_seeded_sampling_does_not_depend_on_batch_composition(tiny, tiny_vectors):
    s = Sampling(max_new_tokens=10, temperature=1.0, top_p=0.9)
    rows = _rows(tiny, PROMPTS, seed=7)
    together = generate(tiny, rows, tiny_vectors, s, batch_size=3)
    apart = [generate(tiny, [r], tiny_vectors, s, batch_size=1)[0] for r in rows]
    assert [r.ids for r in together] == [r.ids for r in apart]
    other_seed = generate(tiny, _rows(tiny, PROMPTS, seed=8), tiny_vectors, s, batch_size=3)
    assert [r.ids for r in other_seed] != [r.ids for r in together]


def test_steering_changes_generation_and_unsteered_rows_do_not(tiny, tiny_vectors):
    greedy = Sampling(max_new_tokens=10, temperature=0.0)
    base = generate(tiny, _rows(tiny, PROMPTS[:1]), tiny_vectors, greedy)[0]
    mixed = generate(tiny, _rows(tiny, PROMPTS[:1]) + _rows(
        tiny, PROMPTS[:1], ivs=[Intervention("desperate", 1, 4.0)]), tiny_vectors, greedy)
    assert mixed[0].ids == base.ids
    assert mixed[1].ids != base.ids


def test_score_perplexity_matches_a_direct_computation(tiny, tiny_vectors):
    prompt = tiny.tokenizer("Hello there", add_special_tokens=False).input_ids
    comp = tiny.tokenizer(" general Kenobi", add_special_tokens=False).input_ids
    other = tiny.tokenizer("A much longer prompt that forces left padding here",
                           add_special_tokens=False).input_ids
    got = score(tiny, [(prompt, comp), (other, comp)], tiny_vectors, 3, ["desperate", "calm"])
    ids = torch.tensor([prompt + comp])
    with torch.no_grad():
        logits = tiny.bridge(ids)
    logp = torch.log_softmax(logits[0, :-1].float(), -1)
    targets = ids[0, 1:]
    nll = -logp[torch.arange(len(targets)), targets][len(prompt) - 1:].mean()
    assert math.isclose(got[0].perplexity, math.exp(float(nll)), rel_tol=1e-4)
    assert set(got[0].readout) == {"desperate", "calm"}
    assert all(math.isfinite(v) for v in got[1].readout.values())
    empty = score(tiny, [(prompt, [])], tiny_vectors, 3, ["calm"])[0]
    assert math.isnan(empty.perplexity) and math.isnan(empty.readout["calm"])


def test_rows_sharing_a_prompt_prefix_match_their_solo_runs(tiny, tiny_vectors):
    """Seeds and generated-only steering share one prefix pass; results must not change."""
    s = Sampling(max_new_tokens=8, temperature=1.0, top_p=0.9)
    text = tiny.format_prompt(PROMPTS[1])
    rows = [GenRow(text, ivs, seed) for seed in (0, 1) for ivs in [
        (), (Intervention("calm", 1, 3.0, "generated"),), (Intervention("calm", 1, 3.0, "all"),),
        (Intervention("desperate", 2, 3.0, "prompt"),)]]
    rows.append(GenRow(tiny.format_prompt(PROMPTS[0]), (), 0))
    together = generate(tiny, rows, tiny_vectors, s, batch_size=len(rows))
    for row, got in zip(rows, together):
        assert got.ids == generate(tiny, [row], tiny_vectors, s, batch_size=1)[0].ids
    assert len({tuple(r.ids) for r in together[:4]}) > 1  # steering did change something


def test_the_plain_decode_path_matches_the_bridge_and_still_steers(tiny, tiny_vectors):
    """Decoding runs on the HF tree beneath the bridge (fastpath.py) with the bridge's residual
    hook points relayed: same tokens as decoding through the bridge, steered rows and not."""
    assert tiny.plain is not None and tiny.describe()["decode"] == "plain"
    greedy = Sampling(max_new_tokens=12, temperature=0.0)
    rows = (_rows(tiny, PROMPTS) + _rows(tiny, PROMPTS, ivs=[Intervention("desperate", 1, 4.0)])
            + _rows(tiny, PROMPTS, ivs=[Intervention("calm", 2, -4.0, "generated")]))
    fast, slow = generate_fast_and_bridge(tiny, rows, tiny_vectors, greedy, batch_size=9)
    assert [r.ids for r in fast] == [r.ids for r in slow]
    # steering reaches the plain path: steered rows differ from unsteered ones
    assert any(fast[i].ids != fast[i + 3].ids for i in range(3))
    assert any(fast[i].ids != fast[i + 6].ids for i in range(3))
    # with no hook registered, the relay leaves the forward pass untouched
    assert not any(b.hook_out._forward_hooks for b in tiny.bridge.blocks)


def _decode_rows(model):
    ivs = [(), (Intervention("desperate", 1, 3.0),), (Intervention("calm", 1, 3.0, "generated"),),
           (Intervention("desperate", 2, -3.0, "prompt"),)]
    return [GenRow(model.format_prompt(p), iv, seed) for p in PROMPTS for iv in ivs
            for seed in (0, 1)]


def _with_decode(model, mode, fn):
    old = model.decode
    model.decode = mode
    try:
        return fn()
    finally:
        model.decode = old


def test_static_cache_decoding_gives_the_dynamic_paths_tokens(tiny, tiny_vectors):
    """STEER_DECODE=static: prefill into a static cache, steering from persistent buffers,
    fixed-shape decode steps. Greedy tokens must equal the growing-cache path's, for every
    steering position mode, padded rows and rows sharing a prompt. (Sampling on the random tiny
    model is near-uniform over 49k tokens, where rounding differences flip draws.)"""
    s = Sampling(max_new_tokens=10, temperature=0.0)
    rows = _decode_rows(tiny)
    dynamic = generate(tiny, rows, tiny_vectors, s, batch_size=len(rows))
    static = _with_decode(tiny, "static",
                          lambda: generate(tiny, rows, tiny_vectors, s, batch_size=len(rows)))
    assert [r.ids for r in static] == [r.ids for r in dynamic]
    # each steering mode changed the tokens of some prompt, so the buffers reached the model
    for k in (1, 2, 3):
        assert any(static[8 * p + 2 * k].ids != static[8 * p].ids for p in range(len(PROMPTS)))
    # a second batch of other prompt lengths reuses the same cache bucket (one graph on a GPU)
    dec = tiny.static_decoder() if tiny.decode == "static" else None
    assert dec is None  # the mode is restored
    # (other tests may have left states of their own batch sizes on the shared model)
    before = set(tiny._static["static"]._states)
    assert (len(rows), 64) in before
    _with_decode(tiny, "static", lambda: generate(tiny, rows[:3], tiny_vectors, s, batch_size=3))
    added = set(tiny._static["static"]._states) - before
    assert added <= {(3, 64)} and (3, 64) in before | added


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on a CPU needs a C++ compiler")
def test_compiled_decoding_gives_the_same_tokens(tiny, tiny_vectors):
    """STEER_DECODE=compiled: the decode step through torch.compile (on a CPU, inductor's C++
    kernels; on a GPU, CUDA graphs) gives the same greedy tokens as the eager path."""
    greedy = Sampling(max_new_tokens=8, temperature=0.0)
    rows = _decode_rows(tiny)[::2]
    dynamic = generate(tiny, rows, tiny_vectors, greedy, batch_size=len(rows))
    compiled = _with_decode(tiny, "compiled", lambda: generate(
        tiny, rows, tiny_vectors, greedy, batch_size=len(rows)))
    assert tiny._static["compiled"].compiled
    assert [r.ids for r in compiled] == [r.ids for r in dynamic]
