"""The one typed schema of an experiment: load a YAML file, apply `--set` overrides, validate,
and resolve every input path beside the config file (whatever the working directory).

Every problem becomes a `ConfigError` whose message is one line naming the file, the key path,
what was given and what was expected. Checks that need the model (layer range, known emotions)
use only cheap metadata: no weights are loaded here. The `tasks` list is a discriminated union
over the registered task types (steer/tasks), rebuilt when one is registered.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    create_model,
    field_validator,
)

from steer.errors import MISSING, ConfigError
from steer.lm.load import EMBEDDED
from steer.sweep.yamlfile import MAX_CONFIG_BYTES, check_values, load_yaml, path_str
from steer.tasks import DEFAULT_TYPE, task_types
from steer.tasks.base import TaskSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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

    def files(self) -> list[Path]:
        """The files the vectors are made from (their digests key the cells)."""
        from steer.vectors.corpus import BUILTIN, builtin_paths

        if self.file:
            return [Path(self.file)]
        files = list(builtin_paths()) if self.corpus == BUILTIN else [Path(self.corpus)]
        if self.neutral:
            files.append(Path(self.neutral))
        return files


def _scales_kind(v: Any) -> str | None:
    if isinstance(v, str):
        return "auto" if v == "auto" else None
    return "list"


class SteeringSpec(_Strict):
    vectors: list[str] = Field(min_length=1)
    layers: list[int] = Field(min_length=1)
    # "auto": calibrated at run start (steer/sweep/autoscale.py) to [-s, -s/2, 0, s/2, s], s
    # the largest scale at which replies stay fluent
    scales: Annotated[Union[  # noqa: UP007
        Annotated[list[float], Field(min_length=1), Tag("list")],
        Annotated[Literal["auto"], Tag("auto")]], Discriminator(
            _scales_kind, custom_error_type="scales",
            custom_error_message="a list of scales (fractions of the residual norm) or 'auto'")]
    positions: Literal["all", "prompt", "generated"] = "all"
    random_controls: int = Field(1, ge=0, le=64)  # each draws a new direction per seed
    # The prompting baseline: conditions in which an emotion is instructed in the system
    # prompt instead of added to the residual stream. A mapping emotion -> sentence (null: the
    # built-in sentence), or a list of emotions (each with the built-in sentence).
    prompt_controls: dict[str, str | None] | list[str] | None = None

    @field_validator("prompt_controls")
    @classmethod
    def _sentences(cls, v):
        if v is None:
            return v
        items = v.items() if isinstance(v, dict) else ((e, None) for e in v)
        for emotion, sentence in items:
            if not emotion.strip() or emotion != emotion.strip():
                raise ValueError("emotion names without surrounding spaces")
            if sentence is not None and not (0 < len(sentence.strip()) <= 500):
                raise ValueError("a sentence of 1 to 500 characters (or null for the built-in)")
        return v

    def instructions(self) -> dict[str, str]:
        """The prompting baseline's conditions: emotion -> the sentence added to the system
        prompt (`default_instruction` where the config gives none).

        Example:
            >>> SteeringSpec(vectors=["calm"], layers=[2], scales=[0.1],
            ...              prompt_controls={"calm": None, "afraid": "Be scared."}).instructions()
            {'calm': 'You feel calm.', 'afraid': 'Be scared.'}
        """
        pc = self.prompt_controls
        if not pc:
            return {}
        items = pc.items() if isinstance(pc, dict) else ((e, None) for e in pc)
        return {e: s.strip() if s else default_instruction(e) for e, s in items}

    @field_validator("layers")
    @classmethod
    def _non_negative(cls, v: list[int]) -> list[int]:
        for x in v:
            if x < 0:
                raise ValueError("layers >= 0")
        return v

    @field_validator("scales")
    @classmethod
    def _finite(cls, v: list[float] | str) -> list[float] | str:
        for x in v if isinstance(v, list) else []:
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


class ReadoutSettings(_Strict):
    layer: int | None = Field(None, ge=0)
    emotions: list[str] | None = None


MetricName = Literal["readout", "sentiment", "perplexity", "repetition"]


class ExperimentConfig(_Strict):
    """A validated experiment (from `steer.load_config`): input paths are absolute, resolved
    beside the config file; `source` is that file and `overrides` the `--set` pairs applied.

    Example:
        >>> import steer
        >>> cfg = steer.load_config("configs/smoke.yaml", overrides=["seeds=[0]"])
        >>> cfg.name, cfg.seeds, [t.type for t in cfg.tasks]
        ('smoke', [0], ['generate'])
    """

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
    readout: ReadoutSettings = Field(default_factory=ReadoutSettings)
    output_dir: str = "runs"  # relative to the working directory

    _source: str = PrivateAttr("<config>")
    _overrides: list = PrivateAttr(default_factory=list)

    @field_validator("name")
    @classmethod
    def _plain_folder_name(cls, v: str) -> str:
        # The run directory is <output_dir>/<name>: a name with a separator, `..`, or a
        # leading dot would put it (and its clean-up) somewhere else, or hide it.
        if not plain_name(v):
            raise ValueError(f"a plain folder name ({NAME_RULE})")
        return v

    @property
    def source(self) -> str:
        """The file the config was read from."""
        return self._source

    @property
    def overrides(self) -> list[tuple[str, Any]]:
        """The `--set` overrides applied, as (key, value) pairs."""
        return list(self._overrides)

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)

    def per_model(self) -> list[ExperimentConfig]:
        """One config per model when `model.name` is a list (each named `<name>-<model>`)."""
        if isinstance(self.model.name, str):
            return [self]
        out = []
        for name in self.model.name:
            sub = self.model_copy(deep=True)
            sub.model.name = name
            sub.name = f"{self.name}-{model_slug(name)}"
            out.append(sub)
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------- the tasks union, per registry


def _task_type(v: Any) -> str | None:
    if isinstance(v, dict):
        t = v.get("type", DEFAULT_TYPE)
        return t if isinstance(t, str) else None
    return getattr(v, "type", None)


_MODELS: dict[tuple, type[ExperimentConfig]] = {}


def config_model() -> type[ExperimentConfig]:
    """ExperimentConfig with `tasks` as the union of the task types registered now."""
    types = task_types()
    key = tuple(sorted((name, id(cls)) for name, cls in types.items()))
    if key not in _MODELS:
        union = Union[tuple(Annotated[cls, Tag(name)] for name, cls in types.items())]  # noqa: UP007
        tasks = Annotated[union, Discriminator(
            _task_type, custom_error_type="task_type",
            custom_error_message="a mapping with a known task type")]
        _MODELS[key] = create_model("ExperimentConfig", __base__=ExperimentConfig,
                                    tasks=(list[tasks], Field(min_length=1)))
    return _MODELS[key]


# ---------------------------------------------------------------- error messages


def _clean_loc(loc: tuple) -> tuple:
    """Drop the union tag pydantic puts after a task's index (`tasks, 0, choice, suite`)."""
    if len(loc) >= 3 and loc[0] == "tasks" and isinstance(loc[1], int) and loc[2] in task_types():
        return loc[:2] + loc[3:]
    if loc[:2] == ("steering", "scales") and len(loc) >= 3 and loc[2] in ("list", "auto"):
        return loc[:2] + loc[3:]  # the tag of the scales union
    return loc


_path_str = path_str


def _lookup(data: Any, loc: tuple) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return MISSING
    return data


def _field_names(data: dict, loc: tuple) -> list[str]:
    """The keys allowed in the mapping at `loc` (a task's keys depend on its type)."""
    cls: Any = ExperimentConfig
    for i, part in enumerate(loc):
        if isinstance(part, int):
            continue
        if cls is ExperimentConfig and part == "tasks":
            task = _lookup(data, loc[:i + 2])
            cls = task_types().get(_task_type(task) or "") if len(loc) > i + 1 else None
            if cls is None:
                return []
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


def _error(e: ValidationError, data: dict, source: str) -> ConfigError:
    err = e.errors()[0]
    loc = _clean_loc(tuple(err["loc"]))
    kind = err["type"]
    given = _lookup(data, loc)
    if kind == "task_type":
        t = given.get("type", MISSING) if isinstance(given, dict) else MISSING
        known = ", ".join(task_types())
        if isinstance(given, dict):
            return ConfigError(source, _path_str(loc) + ".type", t, f"a task type ({known})")
        return ConfigError(source, _path_str(loc), given,
                           f"a task: a mapping with a name and a type ({known})")
    if kind == "extra_forbidden":
        parent = _field_names(data, loc[:-1])
        expected = f"a known key ({', '.join(parent)})" if parent else "no such key"
        return ConfigError(source, _path_str(loc), loc[-1] if loc else MISSING, expected)
    if kind == "missing":
        return ConfigError(source, _path_str(loc), MISSING, "a value (this key is required)")
    msg = err["msg"]
    for prefix in ("Input should be ", "Value error, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    return ConfigError(source, _path_str(loc), given, msg)


# ---------------------------------------------------------------- loading and overrides


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """`key.path=value` -> (path parts, value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError("--set", text, text, "key.path=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise ConfigError("--set", key, text, "a dotted key path such as steering.scales")
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.split(".")]
    try:  # the same strict loader as files: no duplicate keys, no huge or deep values
        value = load_yaml(raw, "--set", tuple(path)) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
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
    """The mapping in a config file, read strictly (steer/sweep/yamlfile.py): ConfigError for a
    missing file, a folder, a file over MAX_CONFIG_BYTES, text that is not UTF-8 or not YAML,
    duplicate keys, and values too deep or too large."""
    p = Path(path)
    src = str(path)
    if p.is_dir():
        raise ConfigError(src, "", "a folder", "a YAML file")
    if not p.is_file():
        raise ConfigError(src, "", MISSING, "an existing YAML file")
    try:
        if p.stat().st_size > MAX_CONFIG_BYTES:  # before reading it, not after
            raise ConfigError(src, "", f"a file over {MAX_CONFIG_BYTES:,} bytes",
                              f"a config of at most {MAX_CONFIG_BYTES:,} bytes")
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(src, "", e.strerror or type(e).__name__, "a readable YAML file"
                          ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(src, f"line {line}", "bytes that are not UTF-8", "a UTF-8 text file"
                          ) from None
    try:
        data = load_yaml(text, src)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", "") or "invalid YAML").split())
        raise ConfigError(src, where, problem, "well-formed YAML") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(src, "", type(data).__name__, "a mapping of keys at the top level")
    return data


def validate(data: dict, source: str = "<config>", base: str | Path | None = None
             ) -> ExperimentConfig:
    """A config from parsed YAML: schema, then input paths resolved beside `base` (the config's
    folder; default: the working directory), then checks against files and model metadata."""
    try:
        cfg = config_model().model_validate(data)
    except ValidationError as e:
        raise _error(e, data, source) from None
    from steer.sweep.checks import check_against_resources, check_plan_size, resolve_paths

    cfg._source = source
    check_plan_size(cfg, source)  # before any file is read or any cell is planned
    resolve_paths(cfg, Path(base) if base is not None else Path.cwd())
    check_against_resources(cfg, source)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override, validate and resolve an experiment config (no weights are loaded).
    `overrides` are `key.path=value` strings, values parsed as YAML. Relative input paths
    (prompt files, suites given by file, corpora, vector files, .gguf models) resolve beside
    the config file; `output_dir` stays relative to the working directory.

    Example:
        >>> import steer
        >>> cfg = steer.load_config("configs/desperation.yaml", overrides=["seeds=[0]"])
        >>> cfg.seeds, cfg.tasks[0].prompts_file.endswith("configs/prompts/stress.txt")
        ([0], True)
    """
    data = read_yaml(path)
    applied = apply_overrides(data, overrides or [])
    if applied:  # overrides may add values: the whole config is held to the file's limits
        check_values(data, str(path))
    cfg = validate(data, str(path), Path(path).parent)
    cfg._overrides = applied
    return cfg


NAME_RULE = ("no '/' or '\\', not '.' or '..', no leading dot, no control characters, "
             "at most 128 characters")


def plain_name(name: str) -> bool:
    """Whether `name` can be a run directory's name: one plain folder name inside output_dir.

    Example:
        >>> [plain_name(n) for n in ("desperation", "../elsewhere", "/tmp", ".", "a\\x00b")]
        [True, False, False, False, False]
    """
    return (0 < len(name) <= 128 and name.strip() == name and not name.startswith(".")
            and not any(c in "/\\" or unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")
                        for c in name))


def default_instruction(emotion: str) -> str:
    """The built-in sentence of the prompting baseline for an emotion (any of the catalog's,
    aliases resolved): "You feel <emotion>."

    Example:
        >>> default_instruction("desperation")
        'You feel desperate.'
    """
    from steer.vectors.catalog import canonical

    return f"You feel {canonical(emotion)}."


def model_slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).name if name.endswith(".gguf") else name
                  ).strip("-").lower()
