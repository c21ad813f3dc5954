"""Checks of a validated config against the world, with no weights loaded: input paths made
absolute beside the config file, files that must exist and parse, layers within the model
(from cheap metadata), emotions that have vectors, and each task's own checks."""

from __future__ import annotations

import math
import os
from pathlib import Path

from steer.errors import ConfigError, TaskConfigError
from steer.lm.load import EMBEDDED, GEMMA, hub_model_error, known_layer_count
from steer.sweep.config import ExperimentConfig
from steer.sweep.plan import AUTO_FRACTIONS

# Cells a plan may hold: (vectors + random controls) x layers x scales x seeds x tasks. Far
# above any sweep that finishes (the shipped desperation.yaml has 60); a typo such as 10**6
# scales is refused with the count instead of hanging in the planner.
MAX_CELLS = 200_000


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


def check_plan_size(cfg: ExperimentConfig, source: str) -> None:
    """Refuse a sweep of more than MAX_CELLS cells, counted by multiplying, before any list is
    expanded; the key named is the longest factor.

    Example:
        >>> import steer
        >>> seeds = "seeds=" + str(list(range(20000)))
        >>> try:
        ...     steer.load_config("configs/smoke.yaml", overrides=[seeds])
        ... except steer.ConfigError as e:
        ...     print(e.path, e.given)
        seeds a plan of 240,000 cells
    """
    factors = {"tasks": len(cfg.tasks), "seeds": len(cfg.seeds)}
    s = cfg.steering
    if s is not None:
        factors.update({"steering.vectors": len(s.vectors) + s.random_controls
                        + len(s.prompt_controls or []),
                        "steering.layers": len(s.layers),
                        "steering.scales": len(AUTO_FRACTIONS if s.scales == "auto"
                                               else s.scales)})
    n = math.prod(factors.values())
    if n > MAX_CELLS:
        key = max(factors, key=lambda k: factors[k])
        shown = " x ".join(f"{v:,} {k.rsplit('.', 1)[-1]}" for k, v in factors.items())
        raise ConfigError(source, key, f"a plan of {n:,} cells",
                          f"at most {MAX_CELLS:,} cells ({shown})")


def check_model_name(name: str, source: str, key: str = "model.name") -> int | None:
    """The layer count of a config's model when it can be known cheaply (None if not), after
    checking that the model can be found: a built-in name, an existing .gguf file or folder, or
    a Hugging Face id in the local cache or on the hub (one short request, never transformers'
    retries)."""
    if name.endswith(".gguf") and not Path(name).is_file():
        raise ConfigError(source, key, name, "an existing .gguf file")
    if name.startswith(("/", "~")) and not Path(name).expanduser().exists():
        raise ConfigError(source, key, name, "an existing model folder")
    n_layers = known_layer_count(name)
    if n_layers is None and not (name.endswith(".gguf") or "/" in name):
        raise ConfigError(source, key, name,
                          f"'{EMBEDDED}', 'tiny-random', '{GEMMA}', a .gguf path, a local "
                          "model folder or a Hugging Face id (org/name)")
    if n_layers is None and not name.endswith(".gguf") and not Path(name).is_dir():
        problem = hub_model_error(name)
        if problem:
            raise ConfigError(source, key, name, f"a model that can be loaded ({problem})")
    return n_layers


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
    from steer.lm.directions import combine_terms, format_expression, parse_expression
    from steer.vectors.catalog import canonical, catalog
    from steer.vectors.corpus import BUILTIN, CorpusError, load_corpus

    name = cfg.model.name
    n_layers = check_model_name(name, source)
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
        if not combine_terms(terms, canonical):
            raise ConfigError(source, f"steering.vectors[{i}]", expr,
                              "a direction that is not zero (its terms cancel out: "
                              f"{format_expression(terms)} = 0)")
    controls = (steer_spec.prompt_controls if steer_spec else None) or []
    for i, emotion in enumerate(controls):
        where = f"steering.prompt_controls.{emotion}" if isinstance(controls, dict) \
            else f"steering.prompt_controls[{i}]"
        if canonical(emotion) not in catalog():
            raise ConfigError(source, where, emotion,
                              f"an emotion of the catalog ({_choices(set(catalog()))})")
    if len({canonical(e) for e in controls}) != len(controls):
        raise ConfigError(source, "steering.prompt_controls", list(controls),
                          "each emotion once")
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
    if not Path(path).is_file():
        raise ConfigError(source, "vectors.file", path, "an existing .safetensors vector file")
    from steer.errors import VectorError
    from steer.vectors.export import import_safetensors

    try:  # checked in full (dtypes, shapes, finite, norms, names), as a run would read it
        return set(import_safetensors(path).names)
    except VectorError as e:
        raise ConfigError(source, "vectors.file", path,
                          f"a valid steer vector file ({e})") from None
