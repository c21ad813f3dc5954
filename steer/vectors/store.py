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
from safetensors.torch import save_file

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
        """A set saved by `save`, checked in full (see steer.vectors.validate); a VectorError
        naming the folder if either file is missing, damaged or inconsistent."""
        from steer.vectors.validate import check_vectors, parse_json, read_safetensors

        folder = Path(folder)
        meta_path = folder / "vectors.json"
        try:
            text = meta_path.read_text(encoding="utf-8")
        except (OSError, ValueError) as e:
            raise VectorError(f"{meta_path}: cannot be read ({e})") from None
        meta = parse_json(text, str(meta_path), "the file", dict)
        tensors, _ = read_safetensors(folder / "vectors.safetensors")
        if set(tensors) != {"vectors"}:
            raise VectorError(f"{folder / 'vectors.safetensors'}: expected one tensor "
                              f"'vectors', found {sorted(tensors)}")
        names, vecs = check_vectors(meta.pop("names", None), tensors["vectors"], meta,
                                    str(folder))
        return cls(names, vecs, meta)


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
    cached = None if rebuild else load_cached(folder, model)
    if cached is not None:
        return cached
    from steer.vectors.validate import check_names, check_vectors

    # names a vector expression cannot use would make the cache fail its own check on every read
    check_names(corpus.emotions, len(corpus.emotions), f"corpus {corpus.source}")
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
    # what a later read would refuse (a zero vector from a one-emotion corpus, NaN activations)
    # is refused now, before it is cached
    check_vectors(emotions, vecs, {}, f"vectors built from corpus {corpus.source}")
    ev = EmotionVectors(emotions, vecs, meta)
    # Per-text activations, kept for validation (held-out accuracy) without another pass.
    acts = {"stories": _compact(story_means)}
    if neutral_means is not None:
        acts["neutral"] = _compact(neutral_means)
    with atomic_writer(folder / "activations.safetensors") as tmp:
        save_file(acts, str(tmp), metadata={
            "labels": json.dumps([s.emotion for s in corpus.stories]),
            "topics": json.dumps([s.topic for s in corpus.stories])})
    ev.save(folder)
    return ev


def _compact(means: torch.Tensor) -> torch.Tensor:
    """float16 to halve the file, unless a value overflows it (inf would fail the read check)."""
    half = means.half().contiguous()
    return half if bool(torch.isfinite(half).all()) else means.float().contiguous()


def emotion_vectors(model, corpus="builtin", neutral: str | Path | None = None, *,
                    file: str | Path | None = None, token_offset: int = 4,
                    denoise_variance: float = 0.5, quiet: bool = False,
                    rebuild: bool = False) -> EmotionVectors:
    """Emotion vectors for `model`: built from the built-in story corpus (171 emotions), or from
    `corpus` (a stories JSONL path, or a loaded `Corpus`) with optional `neutral` dialogues for
    denoising, and cached under $STEER_CACHE (a damaged entry is rebuilt, with a notice); or
    read from a steer vector `file` (.safetensors, checked in full and against the model's
    width and layers; one imported for some layers only is padded with zeros). A progress bar
    shows while building unless `quiet`.

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
        from steer.vectors.validate import check_for_model

        ev = import_safetensors(file)
        ev.vectors = check_for_model(ev.vectors, ev.meta, model, str(file))
        return ev
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, neutral)
    folder = cache_folder(model, corpus, token_offset, denoise_variance)
    cached = None if rebuild else load_cached(folder, model)
    if cached is not None:
        return cached
    total = len(corpus.stories) + (len(corpus.neutral) if denoise_variance > 0 else 0)
    with progress.task("emotion vectors", total, quiet) as advance:
        # the cache was just found missing or unusable: build without looking again
        return build_or_load(model, corpus, token_offset, denoise_variance, progress=advance,
                             rebuild=True)


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


def load_cached(folder: Path, model) -> EmotionVectors | None:
    """The vector set cached in `folder` if it is complete and valid for `model`; None if there
    is none, or (after a one-line notice) if it is damaged: either file missing, truncated or
    lying, vectors of another model's shape or fingerprint, activations that do not fit."""
    from steer.io import cache_notice
    from steer.vectors.validate import check_for_model

    files = ("vectors.json", "vectors.safetensors", "activations.safetensors")
    if not any((folder / f).exists() for f in files):
        return None
    try:
        ev = EmotionVectors.load(folder)
        if ev.meta.get("model_fingerprint", model.fingerprint) != model.fingerprint:
            raise VectorError(f"{folder}: made for model fingerprint "
                              f"{ev.meta.get('model_fingerprint')!r}")
        if "layers" in ev.meta:  # a built set has every layer
            raise VectorError(f"{folder}: a cached set lists only layers {ev.meta['layers']}")
        check_for_model(ev.vectors, ev.meta, model, str(folder))
        shape, labels, _ = activations_layout(folder)
        if shape[1:] != tuple(ev.vectors.shape[1:]) or len(set(labels)) != len(ev.names):
            raise VectorError(f"{folder}: activations of shape {shape} over "
                              f"{len(set(labels))} emotions do not fit vectors of shape "
                              f"{tuple(ev.vectors.shape)}")
    except VectorError as e:
        cache_notice(f"cached vectors in {folder}", e)
        return None
    return ev


def activations_layout(folder: Path) -> tuple[tuple[int, ...], list[str], list[str]]:
    """(story tensor shape, labels, topics) of the activations saved by build_or_load, read
    from the file's header alone (a cache hit should not read 50 MB): float tensors `stories`
    and maybe `neutral` [N, L, d] of one layer count and width, one label and topic per story."""
    from steer.vectors.validate import parse_json, read_header

    path = Path(folder) / "activations.safetensors"
    if not path.exists():
        raise VectorError(f"{folder}: no saved activations; rebuild with `steer vectors build "
                          "--rebuild`")
    label = str(path)
    header, meta = read_header(path)
    if "stories" not in header or set(header) - {"stories", "neutral"}:
        raise VectorError(f"{label}: expected tensors 'stories' (and 'neutral'), found "
                          f"{sorted(header)}")
    shapes = {k: shape for k, (_, shape) in header.items()}
    if any(len(x) != 3 or 0 in x for x in shapes.values()) or \
            shapes.get("neutral", shapes["stories"])[1:] != shapes["stories"][1:]:
        raise VectorError(f"{label}: tensors of shapes {shapes}; expected [texts, layers, "
                          "width], one layer count and width")
    labels = parse_json(meta.get("labels"), label, "metadata 'labels'", list)
    topics = parse_json(meta.get("topics"), label, "metadata 'topics'", list)
    if not len(labels) == len(topics) == shapes["stories"][0]:
        raise VectorError(f"{label}: {shapes['stories'][0]} stories but {len(labels)} labels "
                          f"and {len(topics)} topics")
    return shapes["stories"], labels, topics


def load_activations(folder: Path) -> tuple[torch.Tensor, torch.Tensor | None, list[str],
                                            list[str]]:
    """(story means [N, L, d], neutral means or None, labels, topics) saved by build_or_load,
    checked in full: the layout (activations_layout), and finite values."""
    from steer.vectors.validate import check_tensor, read_safetensors

    _, labels, topics = activations_layout(folder)
    path = Path(folder) / "activations.safetensors"
    tensors, _ = read_safetensors(path)
    for name, t in tensors.items():
        check_tensor(t, str(path), repr(name), 3)
    neutral = tensors.get("neutral")
    return (tensors["stories"].float(), None if neutral is None else neutral.float(), labels,
            topics)


def cached_activations(model, corpus, token_offset: int = 4, denoise_variance: float = 0.5
                       ) -> tuple[torch.Tensor, torch.Tensor | None, list[str], list[str]]:
    """load_activations of the cache entry for these settings, the entry rebuilt first (with a
    one-line notice) if the activations cannot be used or do not fit `model`."""
    from steer.io import cache_notice

    folder = cache_folder(model, corpus, token_offset, denoise_variance)
    try:
        acts = load_activations(folder)
        if tuple(acts[0].shape[1:]) != (model.n_layers, model.d_model):
            raise VectorError(f"{folder}: activations of shape {tuple(acts[0].shape)}, the "
                              f"model has {model.n_layers} layers of width {model.d_model}")
        return acts
    except VectorError as e:
        cache_notice(f"cached activations in {folder}", e)
    build_or_load(model, corpus, token_offset, denoise_variance, rebuild=True)
    return load_activations(folder)
