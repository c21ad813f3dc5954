"""Per-layer activation statistics on fixed neutral text, and the token filter they feed."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from steer.data import data_path
from steer.io import atomic_write, cache_dir

# Tokens whose residual norm exceeds this multiple of the layer's median are attention sinks
# (position 0, rare tokens) with norms up to ~200x typical; averaging over them ruins means.
OUTLIER_FACTOR = 5.0

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
    """Median per-token residual norm after every layer; cached per model fingerprint + dtype."""
    dtype = str(model.dtype).replace("torch.", "")
    path = Path(cache_dir()) / "norms" / f"{model.fingerprint}-{dtype}.json"
    if path.exists():
        return torch.tensor(json.loads(path.read_text())["median_norm"], dtype=torch.float32)
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(model.n_layers)]
    for real, acts in token_norms(model, neutral_texts()):
        for layer, a in acts.items():
            per_layer[layer].append(a.float().norm(dim=-1)[real].cpu())
    med = [float(torch.cat(x).median()) for x in per_layer]
    atomic_write(path, json.dumps({"model": model.name, "median_norm": med}))
    return torch.tensor(med, dtype=torch.float32)
