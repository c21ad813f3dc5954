"""Checks of a validated config against the world, with no weights loaded: input paths made
absolute beside the config file, files that must exist and parse, layers within the model
(from cheap metadata), emotions that have vectors, and each task's own checks."""

from __future__ import annotations

import os
from pathlib import Path

from steer.errors import ConfigError, TaskConfigError
from steer.lm.load import EMBEDDED, GEMMA, known_layer_count
from steer.sweep.config import ExperimentConfig


def _beside(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p) if p.is_absolute() else os.path.normpath(base.absolute() / p)


def _is_model_path(name: str, base: Path) -> bool:
    return (name.endswith(".gguf") or name.startswith(("/", "./", "../", "~"))
            or (base / name).exists())


def resolve_paths(cfg: ExperimentConfig, base: Path) -> None:
    """Make every input path absolute, relative ones taken beside `base`."""
    from steer.vectors.corpus import BUILTIN

    names = cfg.model.name if isinstance(cfg.model.name, list) else [cfg.model.name]
    names = [_beside(base, n) if _is_model_path(n, base) else n for n in names]
    cfg.model.name = names if isinstance(cfg.model.name, list) else names[0]
    v = cfg.vectors
    v.file = _beside(base, v.file) if v.file else None
    v.corpus = v.corpus if v.corpus == BUILTIN else _beside(base, v.corpus)
    v.neutral = _beside(base, v.neutral) if v.neutral else None
    for task in cfg.tasks:
        for key in task.input_files:
            value = getattr(task, key)
            if value:
                setattr(task, key, _beside(base, value))


def check_against_resources(cfg: ExperimentConfig, source: str) -> None:
    """Checks that need files or model metadata (never weights)."""
    if isinstance(cfg.model.name, list):
        if not cfg.model.name or len(set(cfg.model.name)) != len(cfg.model.name):
            raise ConfigError(source, "model.name", cfg.model.name,
                              "a model name, or a list of distinct model names")
        for sub in cfg.per_model():
            check_against_resources(sub, source)
        return
    from steer.errors import SteeringError
    from steer.lm.directions import parse_expression
    from steer.vectors.catalog import canonical
    from steer.vectors.corpus import BUILTIN, CorpusError, load_corpus

    name = cfg.model.name
    n_layers = known_layer_count(name)
    if name.endswith(".gguf") and not Path(name).exists():
        raise ConfigError(source, "model.name", name, "an existing .gguf file")
    if name.startswith(("/", "~")) and not Path(name).expanduser().exists():
        raise ConfigError(source, "model.name", name, "an existing model folder")
    if n_layers is None and not (name.endswith(".gguf") or "/" in name):
        raise ConfigError(source, "model.name", name,
                          f"'{EMBEDDED}', 'tiny-random', '{GEMMA}', a .gguf path, a local "
                          "model folder or a Hugging Face id (org/name)")
    steer_spec = cfg.steering
    if n_layers is not None:
        for i, layer in enumerate(steer_spec.layers if steer_spec else []):
            if layer >= n_layers:
                raise ConfigError(source, f"steering.layers[{i}]", layer,
                                  f"a layer in 0..{n_layers - 1} ({name} has {n_layers})")
        if cfg.readout.layer is not None and cfg.readout.layer >= n_layers:
            raise ConfigError(source, "readout.layer", cfg.readout.layer,
                              f"a layer in 0..{n_layers - 1} ({name} has {n_layers})")
    for key in ("corpus", "neutral"):
        value = getattr(cfg.vectors, key)
        if value is not None and value != BUILTIN and not Path(value).is_file():
            raise ConfigError(source, f"vectors.{key}", value,
                              f"'{BUILTIN}' or an existing JSONL file")
    if cfg.vectors.file is not None:
        known = _names_in_vector_file(cfg.vectors.file, source)
    else:
        try:
            corpus = load_corpus(cfg.vectors.corpus, cfg.vectors.neutral)
        except CorpusError as e:
            raise ConfigError(source, "vectors.corpus", cfg.vectors.corpus,
                              f"a valid corpus ({e})") from None
        known = set(corpus.emotions)
    for i, expr in enumerate(steer_spec.vectors if steer_spec else []):
        try:
            terms = parse_expression(expr)
        except SteeringError as e:
            raise ConfigError(source, f"steering.vectors[{i}]", expr, str(e)) from None
        for _, term in terms:
            if canonical(term) not in known:
                raise ConfigError(source, f"steering.vectors[{i}]", expr,
                                  f"emotions with vectors ({_choices(known)})")
    for i, emotion in enumerate(cfg.readout.emotions or []):
        if canonical(emotion) not in known:
            raise ConfigError(source, f"readout.emotions[{i}]", emotion,
                              f"an emotion with a vector ({_choices(known)})")
    for i, task in enumerate(cfg.tasks):
        try:
            task.check()
        except TaskConfigError as e:
            raise ConfigError(source, f"tasks[{i}].{e.field}", e.given, e.expected) from None
    names = [t.name for t in cfg.tasks]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise ConfigError(source, f"tasks[{i}].name", n, "a task name used once")


def _choices(names: set[str], limit: int = 12) -> str:
    shown = sorted(names)
    if len(shown) <= limit:
        return ", ".join(shown)
    return ", ".join(shown[:limit]) + f", ... {len(shown)} in all; see steer vectors show"


def _names_in_vector_file(path: str, source: str) -> set[str]:
    import json

    from safetensors import safe_open

    if not Path(path).is_file():
        raise ConfigError(source, "vectors.file", path, "an existing .safetensors vector file")
    try:
        with safe_open(path, framework="pt") as f:
            return set(json.loads((f.metadata() or {})["names"]))
    except Exception:
        raise ConfigError(source, "vectors.file", path,
                          "a steer vector file (steer vectors export/import writes them)") from None
