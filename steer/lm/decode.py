"""Batched generation under per-row steering.

Rows of a batch may belong to different conditions: each row carries its own interventions and
its own seed, and sampling draws from a per-row generator, so a row's text does not depend on
which other rows share its batch. Prompts are left-padded with matching attention masks and
position ids (the bridge derives positions from the mask).

A row whose logits go non-finite (NaN or inf, e.g. under an absurd steering scale) ends there:
its result keeps the tokens before and says `nonfinite`, and the other rows go on untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from steer.lm.steering import Intervention, capture, steer_rows


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
    nonfinite: bool = False  # True when the row's logits went NaN/inf and its text was cut there
    # with `generate_rows(tail=(layer, n))`: the residual stream after `layer` at the prompt's
    # last n tokens [n, d_model], from the prefill pass itself (None where another path ran)
    tail: torch.Tensor | None = None


@dataclass
class Sampling:
    max_new_tokens: int = 48
    temperature: float = 0.7
    top_p: float = 0.95
    stop_ids: list[int] = field(default_factory=list)


def _nucleus(p: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero all but the smallest set of the (descending-sorted) probabilities reaching top_p."""
    return p.masked_fill(p.cumsum(-1) - p > top_p, 0.0)


_MASK32 = 0xFFFFFFFF


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer mix (xor-shift-multiply rounds) of int64 values in
    0..2^32-1; with a multiplier below 2^31 no product overflows int64."""
    for _ in range(2):
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & _MASK32
    return x ^ (x >> 16)


def _draw(p: torch.Tensor, ids: torch.Tensor, g: torch.Generator) -> int:
    """One of the tokens `ids`, drawn with probability proportional to `p` (an exponential
    race: the largest p / E wins, E ~ Exp(1)).

    Each token's E is a function of its id and of this step's key from `g`, not of its place
    in `ids`. Why: batches of different sizes give logits that differ in the last bits (the
    CPU's matrix kernels, like GPUs', depend on the number of rows), which reorders near-equal
    probabilities. Drawn by rank (multinomial over the sorted nucleus) a reordering gave another
    token, about once in a hundred steps on a flat distribution, so a row's text depended on
    how many rows shared its batch; drawn by id it changes only on an exact near-tie of two
    races."""
    k1, k2 = torch.randint(0, 2**32, (2,), generator=g).tolist()
    u = (_hash32(_hash32(ids.long() ^ k1) ^ k2).double() + 0.5) / 2**32  # in (0, 1)
    return int(ids[(p.double() / -u.log()).argmax()])


def _pick(logits: torch.Tensor, gens: list[torch.Generator], s: Sampling,
          skip: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row: greedy at temperature 0, else nucleus sampling with each row's RNG.

    The nucleus is looked for among the top 1024 tokens (a full sort of the vocabulary per step
    costs more than the model's decode step on a CPU); a row whose nucleus is wider falls back
    to the full sort. Each row's draw depends only on its own logits and generator, and is
    keyed by token id (see `_draw`), so last-bit differences in the logits do not flip it. Rows in
    `skip` (finished, or with non-finite logits) draw nothing and get token 0: sampling from
    NaN probabilities would raise and fail every row of the batch."""
    if s.temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / s.temperature, dim=-1)
    vals, idx = probs.topk(min(1024, probs.shape[-1]), dim=-1)
    vals, idx, mass = vals.cpu(), idx.cpu(), vals.sum(-1).cpu()
    skipped = skip.tolist() if skip is not None else [False] * len(gens)
    picks = []
    for r, g in enumerate(gens):
        if skipped[r]:
            picks.append(0)
        elif s.top_p < 1.0 and mass[r] >= s.top_p:
            picks.append(_draw(_nucleus(vals[r], s.top_p), idx[r], g))
        elif s.top_p < 1.0:
            sp, order = probs[r].cpu().sort(descending=True)
            picks.append(_draw(_nucleus(sp, s.top_p), order, g))
        else:
            p = probs[r].cpu()
            picks.append(_draw(p, torch.arange(p.shape[-1]), g))
    return torch.tensor(picks, device=logits.device)


def _prefix_key(row: GenRow) -> tuple:
    """What the prompt's KV cache (all but its last token) depends on: the prompt and any
    steering of prompt positions. Rows with equal keys (other seeds, or steering only generated
    positions) share one prefix computation."""
    return (row.prompt, tuple(iv for iv in row.interventions
                              if iv.scale != 0 and iv.positions != "generated"))


def _generate_batch(model, rows: Sequence[GenRow], vectors, s: Sampling,
                    tail: tuple[int, int] | None = None) -> list[GenResult]:
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
            out, broken = _decode(logits, lambda nxt: static.step(st, nxt), rows, s, model)
            return _finish(model, rows, ids, mask, out, broken, s)
        cache, tails = None, None
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
                with capture(model, [tail[0]] if tail else []) as acts:
                    logits, cache = model.forward(ids, mask, None, 1, use_cache=True)
                if tail:  # left-padded: the last columns are every row's last prompt tokens
                    tails = acts[tail[0]][:, -tail[1]:].float().cpu()
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

            out, broken = _decode(logits[:, -1], step, rows, s, model)
    done = _finish(model, rows, ids, mask, out, broken, s)
    if tails is not None:
        for r, res in enumerate(done):
            res.tail = tails[r, -min(tail[1], len(res.prompt_ids)):]
    return done


def _decode(logits: torch.Tensor, step: Callable[[torch.Tensor], torch.Tensor], rows,
            s: Sampling, model) -> tuple[list[torch.Tensor], list[int | None]]:
    """The token loop: pick one token per row from `logits` [B, vocab], feed it to `step`,
    until every row has stopped or `max_new_tokens` are out. Finished rows get padding.

    Also returns, per row, the step at which its logits went non-finite (None if never): such
    a row is finished there, so that it neither raises in sampling nor runs on as garbage."""
    stop = torch.tensor(sorted(set(s.stop_ids)), dtype=torch.long, device=logits.device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=logits.device)
    gens = [torch.Generator().manual_seed(int(r.seed)) for r in rows]
    pad = model.tokenizer.pad_token_id
    broken_at: list[int | None] = [None] * len(rows)
    out: list[torch.Tensor] = []
    for i in range(s.max_new_tokens):
        bad = ~done & ~torch.isfinite(logits).all(dim=-1)
        if bool(bad.any()):
            for r in bad.nonzero().flatten().tolist():
                broken_at[r] = i
            done = done | bad
        nxt = _pick(logits, gens, s, done).to(logits.device)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        out.append(nxt)
        done |= torch.isin(nxt, stop)
        if bool(done.all()) or i == s.max_new_tokens - 1:
            break
        logits = step(nxt)
    return out, broken_at


def _finish(model, rows, ids: torch.Tensor, mask: torch.Tensor, out: list[torch.Tensor],
            broken_at: list[int | None], s: Sampling) -> list[GenResult]:
    tok = model.tokenizer
    gen = torch.stack(out, dim=1).cpu() if out else torch.zeros(len(rows), 0, dtype=torch.long)
    results = []
    stop_set = set(s.stop_ids)
    for r in range(len(rows)):
        prompt_ids = ids[r][mask[r].bool()].tolist()
        row, stopped = [], False
        cut = broken_at[r]  # tokens from a non-finite step on are padding, not text
        for t in gen[r].tolist()[:cut]:
            if t in stop_set:
                stopped = True
                break
            row.append(t)
        results.append(GenResult(prompt_ids, row, tok.decode(row, skip_special_tokens=True),
                                 stopped, nonfinite=cut is not None))
    return results


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding); order restored by caller."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def generate_rows(model, rows: Sequence[GenRow], vectors=None, sampling: Sampling | None = None,
             batch_size: int = 32, progress: Callable[[int], None] | None = None,
             tail: tuple[int, int] | None = None) -> list[GenResult]:
    """Generate for rows already formatted (chat template applied), each under its own
    interventions and seed; results in row order. With `tail=(layer, n)`, each result keeps the
    residual stream at `layer` over its prompt's last n tokens from the prefill pass
    (`GenResult.tail`), where that pass covers the whole prompt at once (no shared prefix, no
    static cache); elsewhere `tail` stays None and a caller reads the prompt again."""
    s = sampling or Sampling()
    if not s.stop_ids:
        s.stop_ids = [model.tokenizer.eos_token_id]
    results: list[GenResult | None] = [None] * len(rows)
    for idx in length_batches([len(r.prompt) for r in rows], batch_size):
        for i, res in zip(idx, _generate_batch(model, [rows[i] for i in idx], vectors, s, tail)):
            results[i] = res
        if progress:
            progress(len(idx))
    return results  # type: ignore[return-value]




@dataclass
class Generation:
    """What `steer.generate` returns: one reply per prompt, in order.

    Example:
        >>> import steer
        >>> out = steer.generate(steer.load_model("tiny-random"), ["Hi.", "Hello."],
        ...                      max_new_tokens=3, temperature=0)
        >>> len(out), len(out.ids[1]) <= 3, isinstance(out.texts[0], str)
        (2, True, True)
    """

    prompts: list[str]  # as given
    texts: list[str]
    ids: list[list[int]]  # generated token ids, without the stop token
    stopped: list[bool]  # True where the model ended its reply itself
    nonfinite: list[bool] = field(default_factory=list)  # True where NaN/inf logits cut it

    def __len__(self) -> int:
        return len(self.texts)


def generate(model, prompts: str | Sequence[str], steer: Intervention | Sequence[Intervention] = (),
             vectors=None, *, max_new_tokens: int = 48, temperature: float = 0.7,
             top_p: float = 0.95, seed: int = 0, system: str | None = None, chat: bool = True,
             batch_size: int = 32) -> Generation:
    """Reply to plain-string prompts (the model's chat template applied unless `chat=False`),
    every prompt under the interventions `steer`; `vectors` resolves their expressions.
    Sampling is seeded per prompt, so a reply does not depend on the other prompts; at
    temperature 0 it is greedy.

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> ev = steer.emotion_vectors(m, quiet=True)
        >>> iv = steer.Intervention("desperate - calm", layer=2, scale=0.5)
        >>> out = steer.generate(m, ["The tests keep failing."], steer=[iv], vectors=ev,
        ...                      max_new_tokens=5, temperature=0)
        >>> len(out.texts), len(out.ids[0]) <= 5
        (1, True)
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(steer, Intervention):
        steer = [steer]
    ivs = tuple(steer)
    texts = [model.format_prompt(p, system) if chat else p for p in prompts]
    rows = [GenRow(t, ivs, seed * 1_000_003 + i) for i, t in enumerate(texts)]
    res = generate_rows(model, rows, vectors, Sampling(max_new_tokens, temperature, top_p),
                        batch_size)
    return Generation(list(prompts), [r.text for r in res], [r.ids for r in res],
                      [r.stopped for r in res], [r.nonfinite for r in res])
