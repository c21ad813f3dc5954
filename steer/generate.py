"""Batched generation under per-row steering, and scoring of texts by the unsteered model.

Rows of a batch may belong to different conditions: each row carries its own interventions and
its own seed, and sampling draws from a per-row generator, so a row's text does not depend on
which other rows share its batch. Prompts are left-padded with matching attention masks and
position ids (the bridge derives positions from the mask).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from steer.steering import Intervention, capture, steer_rows
from steer.vectors.extract import _keep_mask, masked_means


@dataclass
class GenRow:
    prompt: str  # already formatted (chat template applied)
    interventions: tuple[Intervention, ...] = ()
    seed: int = 0


@dataclass
class GenResult:
    prompt_ids: list[int]
    ids: list[int]
    text: str
    stopped: bool  # True when the model ended the text itself (EOS), False at the token limit


@dataclass
class Sampling:
    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 0.95
    stop_ids: list[int] = field(default_factory=list)


def _nucleus(p: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of the (descending-sorted) probabilities reaching top_p."""
    return p.masked_fill(p.cumsum(-1) - p > top_p, 0.0)


def _pick(logits: torch.Tensor, gens: list[torch.Generator], s: Sampling) -> torch.Tensor:
    """One token per row: greedy at temperature 0, else nucleus sampling with each row's RNG.

    The nucleus is looked for among the top 1024 tokens (a full sort of the vocabulary per step
    costs more than the model's decode step on a CPU); a row whose nucleus is wider falls back
    to the full sort. Each row's draw depends only on its own logits and generator."""
    if s.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / s.temperature, dim=-1)
    vals, idx = probs.topk(min(1024, probs.shape[-1]), dim=-1)
    vals, idx, mass = vals.cpu(), idx.cpu(), vals.sum(-1).cpu()
    picks = []
    for r, g in enumerate(gens):
        if s.top_p < 1.0 and mass[r] >= s.top_p:
            picks.append(int(idx[r, torch.multinomial(_nucleus(vals[r], s.top_p), 1, generator=g)]))
        elif s.top_p < 1.0:
            sp, order = probs[r].cpu().sort(descending=True)
            picks.append(int(order[torch.multinomial(_nucleus(sp, s.top_p), 1, generator=g)]))
        else:
            picks.append(int(torch.multinomial(probs[r].cpu(), 1, generator=g)))
    return torch.tensor(picks, device=logits.device)


def _prefix_key(row: GenRow) -> tuple:
    """What the prompt's KV cache (all but its last token) depends on: the prompt and any
    steering of prompt positions. Rows with equal keys (other seeds, or steering only generated
    positions) share one prefix computation."""
    return (row.prompt, tuple(iv for iv in row.interventions
                              if iv.scale != 0 and iv.positions != "generated"))


def _generate_batch(model, rows: Sequence[GenRow], vectors, s: Sampling) -> list[GenResult]:
    keys = [_prefix_key(r) for r in rows]
    uniq = list(dict.fromkeys(keys))
    slot = {k: i for i, k in enumerate(uniq)}
    ids_u, mask_u = model.encode([k[0] for k in uniq])  # left-padded: last column = last token
    which = torch.tensor([slot[k] for k in keys], device=ids_u.device)
    ids, mask = ids_u[which], mask_u[which]
    ivs = [r.interventions for r in rows]
    static = model.static_decoder()
    with torch.no_grad():
        if static is not None:
            with steer_rows(model, ivs, vectors) as rs:  # its deltas, loaded into static buffers
                logits, st = static.prefill(ids, mask, rs, s.max_new_tokens)
            out = _decode(logits, lambda nxt: static.step(st, nxt), rows, s, model)
            return _finish(model, rows, ids, mask, out, s)
        cache = None
        if len(uniq) < len(rows) and ids_u.shape[1] > 1:
            # Rows sharing a prefix (other seeds, or steering only generated positions) read it
            # once; each row's last token then goes through under its own steering.
            with steer_rows(model, [list(k[1]) for k in uniq], vectors) as rs:
                rs.phase = "prefix"
                _, cache = model.forward(ids_u[:, :-1], mask_u[:, :-1], None, 1, use_cache=True)
            for layer in cache.layers:
                layer.batch_select_indices(which)
        with steer_rows(model, ivs, vectors) as rs:
            if cache is None:  # nothing shared: one pass ("prompt" steers the last token too)
                rs.phase = "prompt"
                logits, cache = model.forward(ids, mask, None, 1, use_cache=True)
            else:
                rs.phase = "last"
                logits, cache = model.forward(ids[:, -1:], mask, cache, use_cache=True)
            rs.phase = "generated"
            full = mask  # past + new tokens

            def step(nxt):
                nonlocal cache, full
                full = torch.cat([full, torch.ones_like(full[:, :1])], dim=1)
                out_logits, cache = model.forward(nxt[:, None], full, cache)
                return out_logits[:, -1]

            out = _decode(logits[:, -1], step, rows, s, model)
    return _finish(model, rows, ids, mask, out, s)


def _decode(logits: torch.Tensor, step: Callable[[torch.Tensor], torch.Tensor], rows,
            s: Sampling, model) -> list[torch.Tensor]:
    """The token loop: pick one token per row from `logits` [B, vocab], feed it to `step`,
    until every row has stopped or `max_new_tokens` are out. Finished rows get padding."""
    stop = torch.tensor(sorted(set(s.stop_ids)), dtype=torch.long, device=logits.device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=logits.device)
    gens = [torch.Generator().manual_seed(int(r.seed)) for r in rows]
    pad = model.tokenizer.pad_token_id
    out: list[torch.Tensor] = []
    for i in range(s.max_new_tokens):
        nxt = _pick(logits, gens, s).to(logits.device)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        out.append(nxt)
        done |= torch.isin(nxt, stop)
        if bool(done.all()) or i == s.max_new_tokens - 1:
            break
        logits = step(nxt)
    return out


def _finish(model, rows, ids: torch.Tensor, mask: torch.Tensor, out: list[torch.Tensor],
            s: Sampling) -> list[GenResult]:
    tok = model.tokenizer
    gen = torch.stack(out, dim=1).cpu() if out else torch.zeros(len(rows), 0, dtype=torch.long)
    results = []
    stop_set = set(s.stop_ids)
    for r in range(len(rows)):
        prompt_ids = ids[r][mask[r].bool()].tolist()
        row, stopped = [], False
        for t in gen[r].tolist():
            if t in stop_set:
                stopped = True
                break
            row.append(t)
        results.append(GenResult(prompt_ids, row, tok.decode(row, skip_special_tokens=True),
                                 stopped))
    return results


def _batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding); order restored by caller."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def generate(model, rows: Sequence[GenRow], vectors=None, sampling: Sampling | None = None,
             batch_size: int = 32, progress: Callable[[int], None] | None = None
             ) -> list[GenResult]:
    s = sampling or Sampling()
    if not s.stop_ids:
        s.stop_ids = [model.tokenizer.eos_token_id]
    results: list[GenResult | None] = [None] * len(rows)
    for idx in _batches([len(r.prompt) for r in rows], batch_size):
        for i, res in zip(idx, _generate_batch(model, [rows[i] for i in idx], vectors, s)):
            results[i] = res
        if progress:
            progress(len(idx))
    return results  # type: ignore[return-value]


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
                results[i] = Score(math.exp(float(nll[r])), ro)
        if progress:
            progress(len(idxs))
    return results  # type: ignore[return-value]


def readout_prompts(model, rows: Sequence[GenRow], skip: Sequence[int], vectors,
                    readout_layer: int, emotions: Sequence[str], batch_size: int = 32,
                    progress: Callable[[int], None] | None = None) -> list[dict[str, float]]:
    """Emotion read-outs of the prompts themselves (no generation), each row under its own
    interventions: the mean activation at `readout_layer` over the prompt's tokens after its
    first `skip[i]` tokens (e.g. past the system prompt), projected on each unit vector, in
    units of the layer's median norm."""
    units = vectors.units(readout_layer, list(emotions)).to(model.device)
    norms = model.resid_norms()
    results: list[dict[str, float] | None] = [None] * len(rows)
    for idx in _batches([len(r.prompt) for r in rows], batch_size):
        ids, mask = model.encode([rows[i].prompt for i in idx])
        keep = _keep_mask(mask, torch.tensor([skip[i] for i in idx]))
        with torch.no_grad(), steer_rows(model, [rows[i].interventions for i in idx],
                                         vectors) as rs, capture(model, [readout_layer]) as acts:
            rs.phase = "prompt"
            model.forward(ids, mask, logits_to_keep=1)
        means = masked_means({0: acts[readout_layer]}, keep, norms[[readout_layer]], 1)[:, 0]
        proj = (means.to(model.device) @ units.T / float(norms[readout_layer])).cpu()
        for r, i in enumerate(idx):
            results[i] = {e: float(proj[r, k]) for k, e in enumerate(emotions)}
        if progress:
            progress(len(idx))
    return results  # type: ignore[return-value]


def next_token_logprobs(model, rows: Sequence[GenRow], candidates: Sequence[Sequence[int]],
                        vectors=None, batch_size: int = 32,
                        progress: Callable[[int], None] | None = None) -> list[list[float]]:
    """For each row (a formatted prompt, usually ending in an answer stem such as "I choose ("),
    the log-probabilities of its candidate next tokens under the row's interventions.

    One forward pass per batch; positions "generated" steer only the last prompt token, the
    one whose output is being read."""
    results: list[list[float] | None] = [None] * len(rows)
    for idx in _batches([len(r.prompt) for r in rows], batch_size):
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
