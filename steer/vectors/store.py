"""EmotionVectors: a [emotion, layer, d_model] tensor with metadata, stored as safetensors + JSON.

Built vectors are cached under $STEER_CACHE/vectors/<key>/ where the key hashes the model
fingerprint, dtype, corpus hash and method settings, so a change to any of them rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from steer.errors import VectorError
from steer.io import atomic_write, atomic_writer, cache_dir
from steer.lm.directions import Direction
from steer.vectors.catalog import canonical

FORMAT_VERSION = 1


@dataclass
class EmotionVectors:
    """Emotion vectors of one model at every layer (from `steer.emotion_vectors`):
    `vectors[e, layer]` is emotion `names[e]`'s direction, not normalized. `ev["calm"]` is a
    `Direction`, so `ev["desperate"] - ev["calm"]` can steer.

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> ev = steer.emotion_vectors(m, quiet=True)
        >>> len(ev.names), tuple(ev.vectors.shape[1:]), "desperation" in ev
        (171, (4, 64), True)
    """

    names: list[str]
    vectors: torch.Tensor  # [E, L, d] float32, not normalized
    meta: dict = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return canonical(name) in self.names

    def index(self, name: str) -> int:
        key = canonical(name)
        if key not in self.names:
            raise VectorError(f"no vector for emotion {name!r}; have: {', '.join(self.names)}")
        return self.names.index(key)

    def __getitem__(self, name: str) -> Direction:
        """The direction of one emotion (a name or an alias)."""
        return Direction([(1.0, self.names[self.index(name)], self)])

    def get(self, name: str, layer: int) -> torch.Tensor:
        return self.vectors[self.index(name), layer]

    def units(self, layer: int, names: list[str] | None = None) -> torch.Tensor:
        """[E, d] unit vectors at `layer` (all emotions, or `names` in that order)."""
        idx = [self.index(n) for n in names] if names else list(range(len(self.names)))
        v = self.vectors[idx, layer]
        return v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        with atomic_writer(folder / "vectors.safetensors") as tmp:
            save_file({"vectors": self.vectors.contiguous()}, str(tmp),
                      metadata={"format": str(FORMAT_VERSION)})
        # written last: its presence marks completion
        atomic_write(folder / "vectors.json", json.dumps({"names": self.names, **self.meta},
                                                         indent=2))

    @classmethod
    def load(cls, folder: Path) -> EmotionVectors:
        folder = Path(folder)
        meta = json.loads((folder / "vectors.json").read_text())
        names = meta.pop("names")
        vecs = load_file(str(folder / "vectors.safetensors"))["vectors"]
        if vecs.shape[0] != len(names):
            raise VectorError(f"{folder}: {vecs.shape[0]} vectors but {len(names)} names")
        return cls(names, vecs.float(), meta)


def cache_key(model, corpus_hash: str, settings: dict) -> str:
    blob = json.dumps({"model": model.fingerprint, "dtype": str(model.dtype),
                       "corpus": corpus_hash, "settings": settings, "v": FORMAT_VERSION},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _settings(token_offset: int, denoise_variance: float) -> dict:
    return {"method": "mean_diff_topic_adjusted", "token_offset": token_offset,
            "denoise_variance": denoise_variance}


def build_or_load(model, corpus, token_offset: int = 4, denoise_variance: float = 0.5,
                  batch_size: int = 16, progress: Callable[[int], None] | None = None,
                  rebuild: bool = False) -> EmotionVectors:
    """Vectors for every emotion in `corpus` at every layer of `model`, from cache when possible.

    `progress(n)` is called with the number of texts read since the last call."""
    from steer.lm.read import text_means
    from steer.vectors.extract import difference_of_means

    settings = _settings(token_offset, denoise_variance)
    folder = cache_folder(model, corpus, token_offset, denoise_variance)
    if not rebuild and (folder / "vectors.json").exists():
        return EmotionVectors.load(folder)
    t0 = time.perf_counter()
    stories = [s.text for s in corpus.stories]
    neutral = corpus.neutral if denoise_variance > 0 else []
    story_means = text_means(model, stories, token_offset, batch_size, progress)
    neutral_means = (text_means(model, neutral, token_offset, batch_size, progress)
                     if neutral else None)
    emotions = corpus.emotions
    vecs, ks = difference_of_means(story_means, [s.emotion for s in corpus.stories], emotions,
                                   neutral_means, denoise_variance,
                                   [s.topic for s in corpus.stories])
    meta = {"model": model.name, "model_fingerprint": model.fingerprint,
            "dtype": str(model.dtype).replace("torch.", ""), "corpus": corpus.source,
            "corpus_hash": corpus.hash(), "n_layers": model.n_layers, "d_model": model.d_model,
            **settings, "neutral_components_removed": ks, "cache_key": folder.name,
            "stories_per_emotion": {e: len(corpus.texts_for(e)) for e in emotions},
            "build_seconds": round(time.perf_counter() - t0, 2)}
    ev = EmotionVectors(emotions, vecs, meta)
    # Per-text activations, kept for validation (held-out accuracy) without another pass.
    acts = {"stories": story_means.half().contiguous()}
    if neutral_means is not None:
        acts["neutral"] = neutral_means.half().contiguous()
    with atomic_writer(folder / "activations.safetensors") as tmp:
        save_file(acts, str(tmp), metadata={
            "labels": json.dumps([s.emotion for s in corpus.stories]),
            "topics": json.dumps([s.topic for s in corpus.stories])})
    ev.save(folder)
    return ev


def emotion_vectors(model, corpus="builtin", neutral: str | Path | None = None, *,
                    file: str | Path | None = None, token_offset: int = 4,
                    denoise_variance: float = 0.5, quiet: bool = False,
                    rebuild: bool = False) -> EmotionVectors:
    """Emotion vectors for `model`: built from the built-in story corpus (171 emotions), or from
    `corpus` (a stories JSONL path, or a loaded `Corpus`) with optional `neutral` dialogues for
    denoising, and cached under $STEER_CACHE; or read from a steer vector `file` (.safetensors,
    checked against the model's shape). A progress bar shows while building unless `quiet`.

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> ev = steer.emotion_vectors(m, quiet=True)  # cached after the first build
        >>> ev.meta["n_layers"], ev.names[:2]
        (4, ['afraid', 'alarmed'])
    """
    from steer import progress
    from steer.vectors.corpus import Corpus, load_corpus

    if file is not None:
        from steer.vectors.export import import_safetensors

        ev = import_safetensors(file)
        if tuple(ev.vectors.shape[1:]) != (model.n_layers, model.d_model):
            raise VectorError(f"{file}: vectors are {tuple(ev.vectors.shape[1:])} (layers, "
                              f"width), the model is {(model.n_layers, model.d_model)}")
        return ev
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, neutral)
    folder = cache_folder(model, corpus, token_offset, denoise_variance)
    if not rebuild and (folder / "vectors.json").exists():
        return EmotionVectors.load(folder)
    total = len(corpus.stories) + (len(corpus.neutral) if denoise_variance > 0 else 0)
    with progress.task("emotion vectors", total, quiet) as advance:
        return build_or_load(model, corpus, token_offset, denoise_variance, progress=advance,
                             rebuild=rebuild)


def cached_vector_sets() -> list[dict]:
    """The metadata of every vector set in the cache ($STEER_CACHE/vectors), with its key."""
    out = []
    for meta_path in sorted((cache_dir() / "vectors").glob("*/vectors.json")):
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # a set being written, or damaged: not listed
        out.append({"key": meta_path.parent.name, **meta})
    return out


def cache_folder(model, corpus, token_offset: int = 4, denoise_variance: float = 0.5) -> Path:
    return cache_dir() / "vectors" / cache_key(model, corpus.hash(), _settings(
        token_offset, denoise_variance))


def load_activations(folder: Path) -> tuple[torch.Tensor, torch.Tensor | None, list[str],
                                            list[str]]:
    """(story means [N, L, d], neutral means or None, labels, topics) saved by build_or_load."""
    from safetensors import safe_open

    path = Path(folder) / "activations.safetensors"
    if not path.exists():
        raise VectorError(f"{folder}: no saved activations; rebuild with `steer vectors build "
                          "--rebuild`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        stories = f.get_tensor("stories").float()
        neutral = f.get_tensor("neutral").float() if "neutral" in f.keys() else None
    return stories, neutral, json.loads(meta["labels"]), json.loads(meta["topics"])
