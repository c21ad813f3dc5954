"""The paper's method: mean residual activations per emotion, minus the mean over emotions,
with the top principal components of neutral text projected out.

The texts' mean activations come from `lm.read.text_means`, every layer in one pass.
"""

from __future__ import annotations

import torch


def neutral_components(neutral: torch.Tensor, variance: float) -> list[torch.Tensor]:
    """Per layer, the top principal directions of neutral text explaining `variance` of it."""
    comps = []
    for layer in range(neutral.shape[1]):
        x = neutral[:, layer].double()
        x = x - x.mean(0, keepdim=True)
        _, s, vh = torch.linalg.svd(x, full_matrices=False)
        share = (s**2).cumsum(0) / (s**2).sum()
        k = int((share < variance).sum()) + 1
        comps.append(vh[:k].float())
    return comps


def emotion_effects(story_means: torch.Tensor, labels: list[str], emotions: list[str],
                    topics: list[str] | None = None) -> torch.Tensor:
    """Per-emotion mean activation with topic effects removed -> [E, L, d].

    Without topics (or with every emotion written on every topic equally often) this is the
    plain per-emotion mean, up to a constant shared by all emotions. When emotions cover
    different topics, the additive model x = emotion + topic is fitted by least squares, so
    that a topic only some emotions were written about does not leak into their vectors."""
    x = story_means.double()
    e_idx = torch.tensor([emotions.index(lab) for lab in labels])
    if not topics or len(set(topics)) < 2:
        out = torch.zeros(len(emotions), *x.shape[1:], dtype=x.dtype).index_add_(0, e_idx, x)
        return (out / torch.bincount(e_idx, minlength=len(emotions))[:, None, None]).float()
    names = sorted(set(topics))
    t_idx = torch.tensor([names.index(t) for t in topics])
    n, n_e = len(labels), len(emotions)
    design = torch.zeros(n, n_e + len(names), dtype=torch.float64)
    design[torch.arange(n), e_idx] = 1.0
    design[torch.arange(n), n_e + t_idx] = 1.0
    # Minimum-norm least squares: emotion effects are fixed up to one shared constant, which
    # the caller removes by subtracting the mean over emotions.
    beta = torch.linalg.pinv(design) @ x.reshape(n, -1)
    emo = beta[:n_e] + beta[n_e:].mean(0, keepdim=True)
    return emo.reshape(n_e, *x.shape[1:]).float()


def difference_of_means(story_means: torch.Tensor, labels: list[str], emotions: list[str],
                        neutral: torch.Tensor | None = None, variance: float = 0.5,
                        topics: list[str] | None = None):
    """Per-emotion mean minus the mean over emotions, optionally denoised. -> ([E, L, d], ks)."""
    per_emotion = emotion_effects(story_means, labels, emotions, topics)
    vecs = per_emotion - per_emotion.mean(0, keepdim=True)
    ks: list[int] = []
    if neutral is not None and len(neutral) > 1 and variance > 0:
        for layer, p in enumerate(neutral_components(neutral, variance)):
            v = vecs[:, layer]
            vecs[:, layer] = v - (v @ p.T) @ p
            ks.append(int(p.shape[0]))
    return vecs, ks
