"""Reading a model without generating: scoring completions, emotion read-outs of prompts,
next-token log-probabilities, and mean activations of texts at every layer.

Every pass here is a forward pass of `model.forward` with capture hooks (steering.py); token
pooling drops attention-sink tokens whose norm exceeds OUTLIER_FACTOR x the layer's median.
Non-finite activations are never pooled away as outliers: they make their row's mean NaN, so
that the sample is flagged downstream (never another row's).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from steer.lm.decode import GenRow, length_batches
from steer.lm.norms import OUTLIER_FACTOR
from steer.lm.steering import capture, steer_rows


def keep_mask(mask: torch.Tensor, offset: int | torch.Tensor) -> torch.Tensor:
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
    """Mean activation per row and layer over kept, non-outlier tokens -> [B, L, d] float32;
    NaN for a row with a NaN/inf activation among its kept tokens."""
    out = []
    for layer in range(n_layers):
        a = acts[layer].float()
        k = keep & (a.norm(dim=-1) <= OUTLIER_FACTOR * float(norms[layer]))
        empty = k.sum(dim=1) == 0
        k[empty] = keep[empty]  # never fall back to the sink token, but never divide by zero
        w = k.float()[:, :, None]
        mean = (a * w).sum(1) / w.sum(1).clamp(min=1.0)
        # an inf token's norm fails the outlier test and would silently drop out of the mean
        broken = (keep & ~torch.isfinite(a).all(dim=-1)).any(dim=1)
        if bool(broken.any()):
            mean[broken] = math.nan
        out.append(mean)
    return torch.stack(out, dim=1).cpu()


def text_means(model, texts: list[str], offset: int = 4, batch_size: int = 16,
               progress: Callable[[int], None] | None = None,
               parallel: bool = True) -> torch.Tensor:
    """[N, n_layers, d_model] mean residual activation of each text at every layer.

    On a CPU with several torch threads, batches run concurrently in as many Python threads,
    one torch thread each: at these matrix sizes two single-threaded passes side by side beat
    one two-threaded pass (11-15% faster on 2 cores, benchmarks/vectors_bench.py)."""
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
        result[idx] = masked_means(acts, keep_mask(mask, offset), norms, model.n_layers)
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


@dataclass
class Score:
    perplexity: float
    readout: dict[str, float]


def score(model, items: Sequence[tuple[list[int], list[int]]], vectors=None,
          readout_layer: int | None = None, emotions: Sequence[str] = (), batch_size: int = 32,
          progress: Callable[[int], None] | None = None) -> list[Score]:
    """Re-read (prompt ids, completion ids) pairs with the unsteered model.

    perplexity: exp of the mean negative log-likelihood of the completion given the prompt.
    readout: per emotion, the mean residual activation over the completion's tokens at
    `readout_layer` projected on that emotion's unit vector, in units of the layer's median norm.

    Rows that share a prompt (the same prompt under many conditions) share one forward pass over
    it: its KV cache is computed once and repeated across a batch of right-padded completions.
    """
    want_readout = vectors is not None and readout_layer is not None and len(emotions) > 0
    layers = [readout_layer] if want_readout else []
    if want_readout:
        units = vectors.units(readout_layer, list(emotions)).to(model.device)
        norm = float(model.resid_norms()[readout_layer])
        norms = model.resid_norms()[[readout_layer]]
    pad = model.tokenizer.pad_token_id
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (p, _) in enumerate(items):
        groups.setdefault(tuple(p), []).append(i)
    results: list[Score | None] = [None] * len(items)
    nan_readout = {e: math.nan for e in emotions} if want_readout else {}
    for prompt, idxs in groups.items():
        with torch.no_grad():
            p = torch.tensor([prompt], device=model.device)
            first, cache0 = model.forward(p, None, None, 1, use_cache=True)
        first_lp = torch.log_softmax(first[0, -1].float(), dim=-1)
        todo = [i for i in idxs if items[i][1]]
        for i in idxs:
            if not items[i][1]:
                results[i] = Score(math.nan, dict(nan_readout))
        todo.sort(key=lambda i: len(items[i][1]))
        for start in range(0, len(todo), batch_size):
            chunk = todo[start:start + batch_size]
            width = max(len(items[i][1]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            comp = torch.zeros(len(chunk), width, dtype=torch.bool)
            for r, i in enumerate(chunk):
                c = items[i][1]
                ids[r, :len(c)] = torch.tensor(c)
                comp[r, :len(c)] = True
            ids, comp = ids.to(model.device), comp.to(model.device)
            mask = torch.cat([torch.ones(len(chunk), len(prompt), dtype=torch.long,
                                         device=model.device), comp.long()], dim=1)
            cache = copy.deepcopy(cache0)
            for layer in cache.layers:
                layer.batch_repeat_interleave(len(chunk))
            with torch.no_grad(), capture(model, layers) as acts:
                logits, _ = model.forward(ids, mask, cache)
            lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            tok_lp = torch.cat([first_lp[ids[:, 0]][:, None],
                                lp.gather(-1, ids[:, 1:, None])[..., 0]], dim=1)
            nll = -(tok_lp * comp).sum(1) / comp.sum(1)
            if want_readout:
                means = masked_means({0: acts[readout_layer]}, comp, norms, 1)[:, 0]
                proj = (means.to(model.device) @ units.T / norm).cpu()
            for r, i in enumerate(chunk):
                ro = {e: float(proj[r, k]) for k, e in enumerate(emotions)} if want_readout else {}
                results[i] = Score(_exp(float(nll[r])), ro)
        if progress:
            progress(len(idxs))
    return results  # type: ignore[return-value]


def _exp(x: float) -> float:
    """exp that overflows to inf (a flagged value) instead of raising for the whole batch."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _project(model, acts: torch.Tensor, keep: torch.Tensor, vectors, readout_layer: int,
             emotions: Sequence[str]) -> list[dict[str, float]]:
    """Each row's mean activation over its kept tokens (`masked_means`: outliers out, NaN on a
    non-finite token) at `readout_layer`, projected on each emotion's unit vector, in units of
    the layer's median norm."""
    units = vectors.units(readout_layer, list(emotions)).to(model.device)
    norms = model.resid_norms()
    means = masked_means({0: acts}, keep, norms[[readout_layer]], 1)[:, 0]
    proj = (means.to(model.device) @ units.T / float(norms[readout_layer])).cpu()
    return [{e: float(proj[r, k]) for k, e in enumerate(emotions)} for r in range(len(proj))]


def readout_prompts(model, rows: Sequence[GenRow], skip: Sequence[int], vectors,
                    readout_layer: int, emotions: Sequence[str], batch_size: int = 32,
                    progress: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """Emotion read-outs of the prompts themselves (no generation), each row under its own
    interventions: the mean activation at `readout_layer` over the prompt's tokens after its
    first `skip[i]` tokens (e.g. past the system prompt), projected on each unit vector, in
    units of the layer's median norm."""
    results: list[dict[str, float] | None] = [None] * len(rows)
    for idx in length_batches([len(r.prompt) for r in rows], batch_size):
        ids, mask = model.encode([rows[i].prompt for i in idx])
        keep = keep_mask(mask, torch.tensor([skip[i] for i in idx]))
        with torch.no_grad(), steer_rows(model, [rows[i].interventions for i in idx],
                                         vectors) as rs, capture(model, [readout_layer]) as acts:
            rs.phase = "prompt"
            model.forward(ids, mask, logits_to_keep=1)
        for i, got in zip(idx, _project(model, acts[readout_layer], keep, vectors,
                                         readout_layer, emotions)):
            results[i] = got
        if progress:
            progress(len(idx))
    return results  # type: ignore[return-value]


def readout_tails(model, rows: Sequence[GenRow], gens: Sequence, n: int, vectors,
                  readout_layer: int, emotions: Sequence[str], batch_size: int = 32
                  ) -> list[dict[str, float]]:
    """The read-outs of `readout_prompts` over each prompt's last `n` tokens (e.g. the
    assistant header: the model's state as it starts to answer), taken from the generation's
    own prefill (`generate_rows(..., tail=(readout_layer, n))`) where it kept them; the other
    rows' prompts are read again under their interventions. Equal either way to rounding."""
    out: list[dict[str, float] | None] = [None] * len(rows)
    for i, g in enumerate(gens):
        if g.tail is not None:
            a = g.tail[None]
            (out[i],) = _project(model, a, torch.ones(a.shape[:2], dtype=torch.bool), vectors,
                                 readout_layer, emotions)
    again = [i for i, r in enumerate(out) if r is None]
    if again:
        got = readout_prompts(model, [rows[i] for i in again],
                              [len(gens[i].prompt_ids) - n for i in again], vectors,
                              readout_layer, emotions, batch_size)
        for i, r in zip(again, got):
            out[i] = r
    return out  # type: ignore[return-value]


def next_token_logprobs(model, rows: Sequence[GenRow], candidates: Sequence[Sequence[int]],
                        vectors=None, batch_size: int = 32,
                        progress: Callable[[int], None] | None = None) -> list[list[float]]:
    """For each row (a formatted prompt, usually ending in an answer stem such as "I choose ("),
    the log-probabilities of its candidate next tokens under the row's interventions.

    One forward pass per batch; positions "generated" steer only the last prompt token, the
    one whose output is being read."""
    results: list[list[float] | None] = [None] * len(rows)
    for idx in length_batches([len(r.prompt) for r in rows], batch_size):
        ids, mask = model.encode([rows[i].prompt for i in idx])
        with torch.no_grad(), steer_rows(model, [rows[i].interventions for i in idx],
                                         vectors) as rs:
            rs.phase = "prompt"
            logits, _ = model.forward(ids, mask, logits_to_keep=1)
        lp = torch.log_softmax(logits[:, -1].float(), dim=-1).cpu()
        for r, i in enumerate(idx):
            results[i] = [float(lp[r, t]) for t in candidates[i]]
        if progress:
            progress(len(idx))
    return results  # type: ignore[return-value]
