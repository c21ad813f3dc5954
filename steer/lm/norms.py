"""Per-layer activation statistics on fixed neutral text, and the token filter they feed."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from steer.data import data_path
from steer.errors import CacheError
from steer.io import atomic_write, cache_dir, cache_notice, discard_cache

# Tokens whose residual norm exceeds this multiple of the layer's median are attention sinks
# (position 0, rare tokens) with norms up to ~200x typical; averaging over them ruins means.
OUTLIER_FACTOR = 5.0
# No real model's residual stream comes near this norm (the largest attention-sink tokens of
# SmolLM2 reach ~2.5e4; float16 tops out at 6.5e4 per element): a cached norm, or a vector,
# above it is damage or a lie, e.g. the 1e30 that once scaled every steering vector to inf.
ABSURD_NORM = 1e7

_FALLBACK = [
    "The train to the airport leaves from platform four every twenty minutes on weekdays.",
    "To reset the router, hold the button on the back for ten seconds and wait for the light.",
    "The library opens at nine and closes at six, except on Sundays when it is closed.",
    "Mix two cups of flour with one teaspoon of salt, then add water until the dough forms.",
]


def neutral_texts(limit: int = 64) -> list[str]:
    path = data_path("corpus", "neutral.jsonl")
    if path.exists():
        texts = [json.loads(x)["text"] for x in path.read_text().splitlines() if x.strip()]
        if texts:
            return texts[:limit]
    return _FALLBACK


def token_norms(model, texts: list[str], batch_size: int = 16):
    """Yield (mask [B,T] of real tokens excluding position 0 of each text, {layer: norms [B,T]})."""
    from steer.lm.steering import capture

    layers = list(range(model.n_layers))
    for i in range(0, len(texts), batch_size):
        ids, mask = model.encode(texts[i:i + batch_size])
        with torch.no_grad(), capture(model, layers) as acts:
            model.forward(ids, mask, logits_to_keep=1)  # activations only
        real = mask.bool().clone()
        first = real.float().argmax(dim=1)
        real[torch.arange(real.shape[0]), first] = False
        yield real, acts


def median_resid_norms(model) -> torch.Tensor:
    """Median per-token residual norm after every layer; cached per model fingerprint + dtype.
    A damaged cache file (truncated, not JSON, wrong length, NaN, zero or absurd values) is
    rebuilt with a one-line notice."""
    dtype = str(model.dtype).replace("torch.", "")
    path = Path(cache_dir()) / "norms" / f"{model.fingerprint}-{dtype}.json"
    cached = read_cached_norms(path, model)
    if cached is not None:
        return torch.tensor(cached, dtype=torch.float32)
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(model.n_layers)]
    for real, acts in token_norms(model, neutral_texts()):
        for layer, a in acts.items():
            per_layer[layer].append(a.float().norm(dim=-1)[real].cpu())
    med = [float(torch.cat(x).median()) for x in per_layer]
    if not all(0 < x <= ABSURD_NORM for x in med):  # NaN fails too
        return torch.tensor(med, dtype=torch.float32)  # not cached: it would fail every read
    atomic_write(path, json.dumps({"model": model.name, "fingerprint": model.fingerprint,
                                   "dtype": dtype, "median_norm": med}))
    return torch.tensor(med, dtype=torch.float32)


def read_cached_norms(path: Path, model) -> list[float] | None:
    """The norms cached at `path` for `model`, or None when there are none or they are unusable
    (then the file is removed, with a notice, to be rebuilt)."""
    if not path.exists():
        return None
    try:
        return _parse_norms(path, model)
    except CacheError as e:
        cache_notice(f"cached norms {path}", e)
        discard_cache(path)
        return None


def _parse_norms(path: Path, model) -> list[float]:
    import math

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # ValueError covers bad JSON and bad UTF-8
        raise CacheError(f"not JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("median_norm"), list):
        raise CacheError("no 'median_norm' list")
    if data.get("fingerprint", model.fingerprint) != model.fingerprint:
        raise CacheError(f"made for model fingerprint {data.get('fingerprint')!r}")
    values = data["median_norm"]
    if len(values) != model.n_layers:
        raise CacheError(f"{len(values)} layers, the model has {model.n_layers}")
    for layer, x in enumerate(values):
        ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
        if not ok or not 0 < x <= ABSURD_NORM:
            raise CacheError(f"norm {x!r} at layer {layer}; expected a finite number in "
                            f"(0, {ABSURD_NORM:g}]")
    return [float(x) for x in values]
