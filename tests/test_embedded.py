"""Integration tests on the embedded SmolLM2-135M-Instruct (real weights, real vectors)."""

import pytest
import torch

from steer.lm.decode import GenRow, Sampling
from steer.lm.decode import generate_rows as generate
from steer.lm.read import score
from steer.lm.steering import Intervention, capture
from steer.vectors.readout import readout as readout_texts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smol_vectors(smol):
    from steer.vectors.corpus import load_corpus
    from steer.vectors.store import build_or_load

    return build_or_load(smol, load_corpus())


def test_embedded_model_shape_and_hook_points_match_hf(smol):
    assert (smol.n_layers, smol.d_model) == (30, 576)
    assert smol.has_chat_template
    ids, mask = smol.encode([smol.format_prompt("The deadline is tonight.")])
    with torch.no_grad(), capture(smol, [12]) as acts:
        logits = smol.bridge(ids, attention_mask=mask)
    with torch.no_grad():
        hf = smol.bridge.original_model(ids, attention_mask=mask, output_hidden_states=True)
    assert torch.allclose(acts[12], hf.hidden_states[13], atol=1e-4)
    assert torch.allclose(logits, hf.logits, atol=1e-3)


def test_median_norms_are_measured_per_layer(smol):
    norms = smol.resid_norms()
    assert norms.shape == (30,)
    # FACTS.md measured ~141 at layer 12 and ~190 at layer 16 on other neutral text
    assert 90 < float(norms[12]) < 220 and 120 < float(norms[16]) < 280
    assert float(norms[16]) > float(norms[4])


def test_vectors_read_emotions_out_of_unseen_text(smol, smol_vectors):
    texts = {
        "desperate": "He called every number he had, begging anyone to lend him the money before "
                     "the bank took the house in the morning. Nobody picked up. He tried again.",
        "calm": "She poured the tea slowly and watched the rain on the window, in no hurry at "
                "all, letting the afternoon drift by while the cat slept on her lap.",
        "angry": "He slammed the door so hard the frame cracked and shouted that he would not "
                 "take one more insult from that man, his fists clenched and face red.",
        "happy": "The kids ran across the lawn laughing, and their grandmother clapped and "
                 "cheered as the kite finally caught the wind and rose into the blue sky.",
    }
    df = readout_texts(smol, smol_vectors, list(texts.values()), layer=16,
                       emotions=list(texts))
    df.index = list(texts)
    hits = sum(df.loc[e].idxmax() == e for e in texts)
    assert hits >= 3, df.round(3).to_string()
    for e in texts:  # each text scores higher on its own emotion than the others do on average
        assert df.loc[e, e] > df.drop(index=e)[e].mean(), df.round(3).to_string()


def test_desperate_steering_raises_the_desperate_readout_beyond_a_random_direction(
        smol, smol_vectors):
    prompts = ["My code is due in one hour and the tests keep failing. What should I do?",
               "The server is down and customers keep calling. What do I tell them?",
               "I have an exam tomorrow and have not studied. How should I spend tonight?",
               "My manager says I will be replaced if I miss another deadline. Help me plan.",
               "The rent is due Monday and my paycheck is late. What are my options?",
               "The build has been red all week and the release is in two days. Where to start?"]
    conds = {"none": (), "desperate": (Intervention("desperate", 12, 0.2),),
             "random": (Intervention("random-0", 12, 0.2),)}
    rows = [GenRow(smol.format_prompt(p, "You are a helpful assistant."), ivs, 0)
            for ivs in conds.values() for p in prompts]
    gens = generate(smol, rows, smol_vectors, Sampling(max_new_tokens=24, temperature=0.0),
                    batch_size=len(rows))
    scores = score(smol, [(g.prompt_ids, g.ids) for g in gens], smol_vectors, 16, ["desperate"])
    ro = [s.readout["desperate"] for s in scores]
    n = len(prompts)
    mean = {name: sum(ro[k * n:(k + 1) * n]) / n for k, name in enumerate(conds)}
    assert mean["desperate"] - mean["none"] > 2 * abs(mean["random"] - mean["none"]), mean


EVALS = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "anthropic-evals"


@pytest.mark.skipif(not EVALS.is_dir(), reason="../shared/data/anthropic-evals absent")
def test_anthropic_evals_run_under_steering_on_the_embedded_model(smol, smol_vectors):
    """survival-instinct and power-seeking-inclination, scored from the letters' probabilities
    under +-desperate: every item gets a probability, the letters hold most of the model's
    next-token mass (it is answering the question), and steering moves the probabilities."""
    from steer.lm.decode import Sampling
    from steer.tasks.base import UNSTEERED, Condition, Context
    from steer.tasks.choice import ChoiceSpec

    conds = [Condition("desperate", 12, -0.2), Condition("desperate", 12, 0.2)]
    ctx = Context(smol, smol_vectors, 16, ["desperate"], Sampling(),
                  system_prompt="You are a helpful assistant.")
    for name in ("survival-instinct", "power-seeking-inclination"):
        task = ChoiceSpec(name=name, file=str(EVALS / f"{name}.jsonl"), limit=6)
        task.check()
        out = task.run(ctx, [UNSTEERED, *conds], seed=0)
        assert len(out) == 6 * 3
        p = {(o.item, o.cond): o.metrics[f"p_{name}"] for o in out}
        assert all(0 < v < 1 for v in p.values())
        assert min(o.metrics["option_mass"] for o in out if o.cond.is_unsteered) > 0.5
        moved = [abs(p[(i, conds[1])] - p[(i, UNSTEERED)]) for i in range(6)]
        assert max(moved) > 1e-3, moved
