"""The one typed schema of an experiment: load a YAML file, apply `--set` overrides, validate.

Every problem becomes a `ConfigError` whose message is one line naming the file, the key path,
what was given and what was expected. Checks that need the model (layer range, known emotions)
use only cheap metadata: no weights are loaded here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steer.model import EMBEDDED, GEMMA, known_layer_count


class ConfigError(ValueError):
    def __init__(self, source: str, path: str, given: Any, expected: str):
        self.source, self.path, self.given, self.expected = source, path, given, expected
        shown = "nothing" if given is _MISSING else repr(given)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{source}: {path or '<top level>'}: got {shown}, expected {expected}")


_MISSING = object()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class ModelSpec(_Strict):
    name: str | list[str] = EMBEDDED  # a list runs the experiment once per model
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


class VectorSpec(_Strict):
    file: str | None = None  # a steer vector file (.safetensors); if set, nothing is built
    corpus: str = "builtin"
    neutral: str | None = None
    token_offset: int = Field(4, ge=0, le=512)
    denoise_variance: float = Field(0.5, ge=0.0, lt=1.0)


class SteeringSpec(_Strict):
    vectors: list[str] = Field(min_length=1)
    layers: list[int] = Field(min_length=1)
    scales: list[float] = Field(min_length=1)
    positions: Literal["all", "prompt", "generated"] = "all"
    random_controls: int = Field(1, ge=0, le=64)  # each draws a new direction per seed

    @field_validator("layers")
    @classmethod
    def _non_negative(cls, v: list[int]) -> list[int]:
        for x in v:
            if x < 0:
                raise ValueError("layers >= 0")
        return v

    @field_validator("scales")
    @classmethod
    def _finite(cls, v: list[float]) -> list[float]:
        for x in v:
            if not -10 <= x <= 10:
                raise ValueError("scales between -10 and 10 (fractions of the residual norm)")
        return v


class GenerationSpec(_Strict):
    max_new_tokens: int = Field(48, ge=1, le=4096)
    temperature: float = Field(0.7, ge=0.0, le=5.0)
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    # "auto": the largest batch that fits, backing off on out-of-memory (recorded in the manifest)
    batch_size: int | Literal["auto"] = 32
    system_prompt: str | None = None
    # KV cache of generation: "dynamic" grows per step; "static"/"compiled" keep fixed shapes,
    # "compiled" records the decode step (CUDA graphs on a GPU). "auto": STEER_DECODE, else
    # dynamic. Like batch_size, it changes speed, not results' keys.
    decode: Literal["auto", "dynamic", "static", "compiled"] = "auto"

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v):
        if isinstance(v, int) and not 1 <= v <= 4096:
            raise ValueError("'auto' or a batch size between 1 and 4096")
        return v


class TaskSpec(_Strict):
    """`generate`: the model replies to each prompt and the replies are scored.
    `readout`: the model only reads each prompt; its emotion read-outs over the user's message
    are recorded (e.g. a `template` with a `{value}` slot filled from `values`).
    `choice`: A/B (or more) behaviour items scored from the answer letters' log-probabilities
    (`suite`: a built-in suite, or `file`: JSONL in steer's or Anthropic's evals format).
    `preference`: pairs of activities, "I prefer (" prefilled; Elo per activity.
    `code`: impossible coding tasks run in a sandbox; each attempt classified."""

    name: str = Field(min_length=1)
    type: Literal["generate", "readout", "choice", "preference", "code"] = "generate"
    prompts: list[str] = Field(default_factory=list)
    prompts_file: str | None = None
    template: str | None = None
    values: list[float | int | str] | None = None
    suite: str | None = None
    file: str | None = None
    behavior: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$")
    stem: str | None = None
    limit: int | None = Field(None, ge=1)
    pairs: Literal["all"] | int = Field("all")
    attempts: int = Field(1, ge=1, le=20)
    max_new_tokens: int | None = Field(None, ge=1, le=4096)
    timeout_s: float = Field(5.0, gt=0, le=600)
    memory_mb: int = Field(512, ge=64, le=65536)

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v):
        if isinstance(v, int) and v < 1:
            raise ValueError("'all' or a number of opponents per activity >= 1")
        return v


ITEM_TASKS = ("choice", "preference", "code")
DEFAULT_STEMS = {"choice": "I choose (", "preference": "I prefer ("}


class ReadoutSpec(_Strict):
    layer: int | None = Field(None, ge=0)
    emotions: list[str] | None = None


MetricName = Literal["readout", "sentiment", "perplexity", "repetition"]


class ExperimentConfig(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    model: ModelSpec = Field(default_factory=ModelSpec)
    vectors: VectorSpec = Field(default_factory=VectorSpec)
    steering: SteeringSpec | None = None  # None: the unsteered model only
    tasks: list[TaskSpec] = Field(min_length=1)
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    metrics: list[MetricName] = Field(
        default_factory=lambda: ["readout", "sentiment", "perplexity", "repetition"])
    readout: ReadoutSpec = Field(default_factory=ReadoutSpec)
    output_dir: str = "runs"


# ---------------------------------------------------------------- loading and overrides


def _path_str(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _lookup(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _expected(err: dict, model_cls: type[BaseModel], loc: tuple) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _field_names(model_cls, loc[:-1])
        return f"a known key ({', '.join(parent)})" if parent else "no such key"
    if kind == "missing":
        return "a value (this key is required)"
    msg = err["msg"]
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return msg


def _field_names(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    cls: Any = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(cls, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        cls = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)),
                   None)
        if cls is None:
            return []
    return sorted(getattr(cls, "model_fields", {}))


def parse_override(text: str) -> tuple[list[str | int], Any]:
    if "=" not in text:
        raise ConfigError("--set", text, text, "key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError("--set", key, text, "a dotted key path such as steering.scales")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    return path, value


def apply_overrides(data: dict, overrides: list[str]) -> list[tuple[str, Any]]:
    """Apply `key.path=value` overrides in place; returns (key, value) pairs for echoing."""
    applied = []
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for i, part in enumerate(path[:-1]):
            nxt = path[i + 1]
            if isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            elif isinstance(node, dict):
                if not isinstance(node.get(part), (dict, list)):
                    node[part] = [] if isinstance(nxt, int) else {}
                node = node[part]
            else:
                raise ConfigError("--set", ".".join(map(str, path)), text, "an existing path")
        last = path[-1]
        if isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError("--set", ".".join(map(str, path)), text, "an existing path")
        applied.append((".".join(map(str, path)), value))
    return applied


def read_yaml(path: str | Path) -> dict:
    p = Path(path)
    src = str(path)
    if not p.is_file():
        raise ConfigError(src, "", _MISSING, "an existing YAML file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        raise ConfigError(src, where, "invalid YAML", "well-formed YAML") from None
    except UnicodeDecodeError:
        raise ConfigError(src, "", "binary data", "a UTF-8 text file") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(src, "", type(data).__name__, "a mapping of keys at the top level")
    return data


def validate(data: dict, source: str = "<config>") -> ExperimentConfig:
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err["loc"])
        given = _lookup(data, loc)
        if err["type"] == "extra_forbidden":
            given = loc[-1] if loc else _MISSING
        raise ConfigError(source, _path_str(loc), given, _expected(err, ExperimentConfig, loc)
                          ) from None
    check_against_resources(cfg, source)
    return cfg


def model_slug(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name if name.endswith(".gguf") else name
                  ).strip("-").lower()


def expand_models(cfg: ExperimentConfig) -> list[ExperimentConfig]:
    """One config per model when `model.name` is a list (each named `<name>-<model>`)."""
    if isinstance(cfg.model.name, str):
        return [cfg]
    out = []
    for name in cfg.model.name:
        sub = cfg.model_copy(deep=True)
        sub.model.name = name
        sub.name = f"{cfg.name}-{model_slug(name)}"
        out.append(sub)
    return out


def check_against_resources(cfg: ExperimentConfig, source: str) -> None:
    """Checks that need files or model metadata (never weights)."""
    if isinstance(cfg.model.name, list):
        if not cfg.model.name or len(set(cfg.model.name)) != len(cfg.model.name):
            raise ConfigError(source, "model.name", cfg.model.name,
                              "a model name, or a list of distinct model names")
        for sub in expand_models(cfg):
            check_against_resources(sub, source)
        return
    from steer.errors import SteeringError
    from steer.expressions import parse_expression
    from steer.vectors.corpus import BUILTIN, CorpusError, load_corpus

    base = Path(source).parent if Path(source).is_file() else Path(".")
    n_layers = known_layer_count(cfg.model.name)
    if n_layers is None and not (cfg.model.name.endswith(".gguf") or "/" in cfg.model.name):
        if not Path(cfg.model.name).exists():
            raise ConfigError(source, "model.name", cfg.model.name,
                              f"'{EMBEDDED}', 'tiny-random', '{GEMMA}', a .gguf path, a local "
                              "model folder or a Hugging Face id (org/name)")
    if cfg.model.name.endswith(".gguf") and not Path(cfg.model.name).exists():
        raise ConfigError(source, "model.name", cfg.model.name, "an existing .gguf file")
    if cfg.model.name.startswith(("/", "./", "../", "~")) and not Path(
            cfg.model.name).expanduser().exists():
        raise ConfigError(source, "model.name", cfg.model.name, "an existing model folder")
    steer_spec = cfg.steering
    if n_layers is not None:
        for i, layer in enumerate(steer_spec.layers if steer_spec else []):
            if layer >= n_layers:
                raise ConfigError(source, f"steering.layers[{i}]", layer,
                                  f"a layer in 0..{n_layers - 1} ({cfg.model.name} has {n_layers})")
        if cfg.readout.layer is not None and cfg.readout.layer >= n_layers:
            raise ConfigError(source, "readout.layer", cfg.readout.layer,
                              f"a layer in 0..{n_layers - 1} ({cfg.model.name} has {n_layers})")
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
    from steer.vectors.catalog import canonical

    for i, expr in enumerate(steer_spec.vectors if steer_spec else []):
        try:
            terms = parse_expression(expr)
        except SteeringError as e:
            raise ConfigError(source, f"steering.vectors[{i}]", expr, str(e)) from None
        for _, name in terms:
            if canonical(name) not in known:
                raise ConfigError(source, f"steering.vectors[{i}]", expr,
                                  f"emotions with vectors ({_choices(known)})")
    for i, name in enumerate(cfg.readout.emotions or []):
        if canonical(name) not in known:
            raise ConfigError(source, f"readout.emotions[{i}]", name,
                              f"an emotion with a vector ({_choices(known)})")
    for i, task in enumerate(cfg.tasks):
        if task.type in ITEM_TASKS:
            _check_item_task(task, i, source, base)
        elif task.suite is not None or task.file is not None:
            raise ConfigError(source, f"tasks[{i}].{'suite' if task.suite else 'file'}",
                              task.suite or task.file,
                              "no suite or file for a generate or readout task (use prompts)")
        elif task.prompts_file is not None:
            p = Path(task.prompts_file)
            if not p.is_absolute() and not p.exists():
                p = base / p
            if not p.is_file():
                raise ConfigError(source, f"tasks[{i}].prompts_file", task.prompts_file,
                                  "an existing file of prompts (one per line)")
        elif task.template is not None:
            if "{value}" not in task.template:
                raise ConfigError(source, f"tasks[{i}].template", task.template,
                                  "a template with a {value} slot")
            if not task.values:
                raise ConfigError(source, f"tasks[{i}].values", task.values,
                                  "a list of values for the template's {value} slot")
        elif not task.prompts:
            raise ConfigError(source, f"tasks[{i}].prompts", task.prompts,
                              "at least one prompt (or a prompts_file, or a template)")
    names = [t.name for t in cfg.tasks]
    for i, n in enumerate(names):
        if names.index(n) != i:
            raise ConfigError(source, f"tasks[{i}].name", n, "a task name used once")


def _check_item_task(task: TaskSpec, i: int, source: str, base: Path) -> None:
    from steer.tasks.items import (
        ACTIVITIES,
        CHOICE_SUITES,
        CODE_SUITES,
        TaskDataError,
        load_activities,
        load_choice_items,
        load_code_tasks,
    )

    builtin = {"choice": CHOICE_SUITES, "preference": (ACTIVITIES,), "code": CODE_SUITES}[task.type]
    if task.suite is not None and task.file is not None:
        raise ConfigError(source, f"tasks[{i}].file", task.file, "either suite or file, not both")
    if task.suite is None and task.file is None:
        if task.type == "choice":
            raise ConfigError(source, f"tasks[{i}].suite", None,
                              f"a built-in suite ({', '.join(CHOICE_SUITES)}) or a file")
        task.suite = builtin[0]
    if task.suite is not None and task.suite not in builtin:
        raise ConfigError(source, f"tasks[{i}].suite", task.suite,
                          f"a built-in suite ({', '.join(builtin)})")
    if task.prompts or task.prompts_file or task.template:
        raise ConfigError(source, f"tasks[{i}].prompts", task.prompts or task.prompts_file
                          or task.template, f"no prompts for a {task.type} task (its items come "
                          "from its suite or file)")
    if task.stem is None and task.type in DEFAULT_STEMS:
        task.stem = DEFAULT_STEMS[task.type]
    loader = {"choice": load_choice_items, "preference": load_activities,
              "code": load_code_tasks}[task.type]
    try:
        loader(task.suite or task.file, base, task.limit)
    except TaskDataError as e:
        key = "suite" if task.suite else "file"
        raise ConfigError(source, f"tasks[{i}].{key}", task.suite or task.file,
                          f"a readable {task.type} file ({e})") from None


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


def load_config(path: str | Path, overrides: list[str] | None = None
                ) -> tuple[ExperimentConfig, list[tuple[str, Any]]]:
    data = read_yaml(path)
    applied = apply_overrides(data, overrides or [])
    return validate(data, str(path)), applied


def task_prompts(task: TaskSpec, source: str | Path | None = None) -> list[str]:
    """The prompts of a generate/readout task; for item tasks, a one-line text per item."""
    if task.type in ITEM_TASKS:
        from steer.tasks.items import load_activities, load_choice_items, load_code_tasks

        base = Path(source).parent if source is not None else None
        src = task.suite or task.file
        if task.type == "choice":
            return [it.prompt for it in load_choice_items(src, base, task.limit)]
        if task.type == "preference":
            return [a.text for a in load_activities(src, base, task.limit)]
        return [t.spec for t in load_code_tasks(src, base, task.limit)]
    prompts = list(task.prompts)
    if task.template is not None:
        prompts += [task.template.replace("{value}", str(v)) for v in task.values or []]
    if task.prompts_file:
        p = Path(task.prompts_file)
        if not p.exists() and source is not None:
            p = Path(source).parent / p
        prompts += [x.strip() for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    return prompts


def to_yaml(cfg: ExperimentConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
