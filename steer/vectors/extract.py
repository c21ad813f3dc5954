"""The paper's method: mean residual activations per emotion, minus the mean over emotions,
with the top principal components of neutral text projected out.

Every layer is computed in one pass over the corpus.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from steer.vectors.norms import OUTLIER_FACTOR


def _keep_mask(mask: torch.Tensor, offset: int | torch.Tensor) -> torch.Tensor:
    """Real tokens at least `offset` tokens after the first (position 0 never counts); `offset`
    may be one number or one per row.

    Texts shorter than the offset fall back to all their tokens after the first."""
    real = mask.bool()
    rel = real.long().cumsum(dim=1) - 1  # index among real tokens
    offset = torch.as_tensor(offset, device=mask.device).clamp(min=1).reshape(-1, 1)
    keep = real & (rel >= offset)
    short = keep.sum(dim=1) == 0
    keep[short] = (real & (rel >= 1))[short]
    return keep


def masked_means(acts: dict[int, torch.Tensor], keep: torch.Tensor, norms: torch.Tensor,
                 n_layers: int) -> torch.Tensor:
    """Mean activation per row and layer over kept, non-outlier tokens -> [B, L, d] float32."""
    out = []
    for layer in range(n_layers):
        a = acts[layer].float()
        k = keep & (a.norm(dim=-1) <= OUTLIER_FACTOR * float(norms[layer]))
        empty = k.sum(dim=1) == 0
        k[empty] = keep[empty]  # never fall back to the sink token, but never divide by zero
        w = k.float()[:, :, None]
        out.append((a * w).sum(1) / w.sum(1).clamp(min=1.0))
    return torch.stack(out, dim=1).cpu()


def text_means(model, texts: list[str], offset: int = 4, batch_size: int = 16,
               progress: Callable[[int], None] | None = None,
               parallel: bool = True) -> torch.Tensor:
    """[N, n_layers, d_model] mean residual activation of each text at every layer.

    On a CPU with several torch threads, batches run concurrently in as many Python threads,
    one torch thread each: at these matrix sizes two single-threaded passes side by side beat
    one two-threaded pass (11-15% faster on 2 cores, benchmarks/vectors_bench.py)."""
    from steer.steering import capture

    norms = model.resid_norms()
    layers = list(range(model.n_layers))
    # Sort by length so batches carry little padding; results go back in input order.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    result = torch.zeros(len(texts), model.n_layers, model.d_model)
    torch_threads = torch.get_num_threads()
    threads = min(torch_threads if parallel and model.device.type == "cpu" else 1, len(batches))

    def run(idx: list[int], acts) -> None:
        ids, mask = model.encode([texts[i] for i in idx])
        with torch.no_grad():
            model.forward(ids, mask, logits_to_keep=1)  # activations only
        result[idx] = masked_means(acts, _keep_mask(mask, offset), norms, model.n_layers)
        if progress:
            progress(len(idx))

    with capture(model, layers, per_thread=threads > 1) as acts:
        if threads <= 1:
            for idx in batches:
                run(idx, acts)
        else:
            from concurrent.futures import ThreadPoolExecutor

            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(threads) as pool:
                    for f in [pool.submit(run, idx, acts) for idx in batches]:
                        f.result()
            finally:
                torch.set_num_threads(torch_threads)
    return result


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
