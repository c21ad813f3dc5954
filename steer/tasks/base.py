"""The task protocol: what a task type is, what it receives, and what it returns.

A task type is one module in `steer/tasks/` with a pydantic `TaskSpec` subclass whose `type`
field is a literal (the config's `tasks` list is a discriminated union on it). The spec is both
the task's config entry and the task itself:

- `check()`: checks that need files (a suite exists, a template has its slot); raises
  `TaskConfigError(field, given, expected)`, which the config loader reports at `tasks[i].field`;
- `items()`: one line of text per item (kept with every sample as its `prompt`);
- `rows_per_condition()`: forward-pass rows one condition costs, for batching units;
- `run(ctx, conditions, seed)`: every item under each condition -> `Sample`s;
- `extra(samples, results, emotions)`: tables, report lines and figures of its own;
- `competence(samples)`: does the unsteered model do the task at all (a `Competence`), before
  any steering effect is read; None where the task type has no such check;
- class settings: `deterministic` (one seed suffices), `input_files` (fields holding paths,
  resolved beside the config and keyed by content).

`steer.register_task(Spec)` adds a type; nothing outside `steer/tasks/` names one.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

PROMPTED = "prompt:"  # vector names of instructed conditions: `prompt:<emotion>`


@dataclass(frozen=True)
class Condition:
    """One condition: `vector` added at `layer`, `scale` x the layer's median residual norm.
    Every condition at scale 0 is the unsteered model, `UNSTEERED`, computed once and reported
    under each vector at scale 0. An instructed condition (the prompting baseline) steers
    nothing: its `prompt` sentence joins the system prompt instead, under the vector name
    `prompt:<emotion>` at layer -1 and scale 0.

    Example:
        >>> import steer
        >>> steer.Condition("desperate", 12, 0.1).is_unsteered, steer.UNSTEERED.is_unsteered
        (False, True)
        >>> c = steer.Condition.instructed("desperate", "You feel desperate.")
        >>> c.vector, c.is_unsteered, c.is_prompted, c.emotion
        ('prompt:desperate', False, True, 'desperate')
    """

    vector: str
    layer: int
    scale: float
    prompt: str | None = None  # instructed: this sentence is added to the system prompt

    @staticmethod
    def instructed(emotion: str, sentence: str) -> Condition:
        """The prompting baseline for `emotion`: no steering, `sentence` in the system prompt."""
        return Condition(PROMPTED + emotion, -1, 0.0, sentence)

    @property
    def is_unsteered(self) -> bool:
        return self.scale == 0 and self.prompt is None

    @property
    def is_prompted(self) -> bool:
        return self.prompt is not None

    @property
    def is_random(self) -> bool:
        return self.vector.startswith("random-")

    @property
    def emotion(self) -> str | None:
        """The instructed emotion of a prompted condition (None otherwise)."""
        return self.vector[len(PROMPTED):] if self.is_prompted else None

    def to_json(self) -> dict | None:
        """The cell file's `cond`: null for the unsteered model."""
        if self.is_unsteered:
            return None
        d = {"vector": self.vector, "layer": self.layer, "scale": self.scale}
        if self.prompt is not None:
            d["prompt"] = self.prompt
        return d

    @staticmethod
    def from_json(d: dict | None) -> Condition:
        return UNSTEERED if d is None else Condition(d["vector"], int(d["layer"]),
                                                     float(d["scale"]), d.get("prompt"))


UNSTEERED = Condition("none", -1, 0.0)  # the one spelling of "no steering" (layer -1: no layer)


@dataclass
class Sample:
    """One item under one condition and seed, with its metric values and anything else worth
    keeping (a reply's text, a classification); what every task's `run` returns.

    `nonfinite` flags a sample whose computation went NaN/inf: set by the task (e.g. a reply cut
    by non-finite logits) or found here in its metrics. Its values are kept as they are and
    counted apart (`n_nonfinite` in the summary), never averaged in.

    Example:
        >>> import steer
        >>> s = steer.Sample(0, 0, steer.UNSTEERED, {"p_x": 0.5}, {"text": "hi"})
        >>> s.to_json()
        {'item': 0, 'seed': 0, 'metrics': {'p_x': 0.5}, 'extra': {'text': 'hi'}}
        >>> steer.Sample(0, 0, steer.UNSTEERED, {"p_x": float("nan")}).to_json()["nonfinite"]
        True
    """

    item: int
    seed: int
    cond: Condition
    metrics: dict[str, float]
    extra: dict = field(default_factory=dict)
    nonfinite: bool = False

    def __post_init__(self):
        self.nonfinite = bool(self.nonfinite) or not all(map(is_finite, self.metrics.values()))

    def to_json(self) -> dict:
        d = {"item": self.item, "seed": self.seed, "metrics": self.metrics, "extra": self.extra}
        if self.nonfinite:  # only when set: cells of finite runs stay as they were
            d["nonfinite"] = True
        return d

    @staticmethod
    def from_json(d: dict, cond: Condition) -> Sample:
        return Sample(d["item"], d["seed"], cond, d["metrics"], d.get("extra", {}),
                      nonfinite=d.get("nonfinite", False))


def is_finite(value) -> bool:
    """Whether a metric value is a finite number (None, NaN, inf and non-numbers are not).

    Example:
        >>> from steer.tasks.base import is_finite
        >>> is_finite(0.5), is_finite(float("inf")), is_finite(None)
        (True, False, False)
    """
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def row_seed(*parts) -> int:
    """A stable 48-bit seed from any values (a task, an item, a seed...)."""
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:12], 16)


def direction_name(cond: Condition, seed: int) -> str:
    """Random control k draws a fresh direction for every seed, so that seeds sample directions
    as well as texts and the control's CI covers direction-to-direction variation."""
    if cond.is_random:
        k = int(cond.vector.split("-", 1)[1])
        return f"random-{row_seed('random', k, seed) % 10**9}"
    return cond.vector


@dataclass
class Context:
    """What a task's `run` works with: the model, its vectors, and the run's settings.
    `interventions(cond, seed)` gives one row's steering under a condition.

    Example:
        >>> import steer
        >>> ctx = steer.Context(model=None, vectors=None, readout_layer=2, emotions=["calm"],
        ...                     sampling=None, positions="all")
        >>> ctx.interventions(steer.Condition("calm", 2, 0.1), seed=0)
        (Intervention(vector='calm', layer=2, scale=0.1, positions='all'),)
        >>> ctx.interventions(steer.UNSTEERED, seed=0)
        ()
    """

    model: Any
    vectors: Any
    readout_layer: int
    emotions: list[str]  # the read-out emotions of the run
    sampling: Any  # lm.decode.Sampling: the run's max_new_tokens, temperature, top_p
    system_prompt: str | None = None
    positions: str = "all"  # which positions steering touches
    metrics: tuple[str, ...] = ("readout", "sentiment", "perplexity", "repetition")
    design_seed: int = 0  # the experiment's first seed (for designs fixed across seeds)
    batch_size: int = 32
    quiet: bool = True

    def interventions(self, cond: Condition, seed: int) -> tuple:
        """The interventions of one row under `cond` (none for the unsteered model, and none for
        an instructed condition, which changes the system prompt instead)."""
        from steer.lm.steering import Intervention

        if cond.scale == 0 or cond.is_prompted:
            return ()
        return (Intervention(direction_name(cond, seed), cond.layer, cond.scale,
                             self.positions),)

    def system_prompt_for(self, cond: Condition) -> str | None:
        """The system prompt of a row under `cond`: the run's, with an instructed condition's
        sentence appended (to the model's default system prompt when the run sets none), so
        that the instruction is the only difference from the unsteered prompt.

        Example:
            >>> import steer
            >>> ctx = steer.Context(model=None, vectors=None, readout_layer=2, emotions=[],
            ...                     sampling=None, system_prompt="You are a helpful assistant.")
            >>> ctx.system_prompt_for(steer.Condition.instructed("calm", "You feel calm."))
            'You are a helpful assistant. You feel calm.'
            >>> ctx.system_prompt_for(steer.UNSTEERED)
            'You are a helpful assistant.'
        """
        if not cond.is_prompted:
            return self.system_prompt
        base = self.system_prompt
        if base is None and self.model is not None:
            base = self.model.default_system_prompt
        return f"{base} {cond.prompt}" if base else cond.prompt


@dataclass
class Extra:
    """A task's own output beyond samples: CSV tables (file name -> frame), report lines, and
    figures (file name -> matplotlib figure), written into the run directory.

    Example:
        >>> import pandas as pd, steer
        >>> e = steer.Extra(tables={"counts_x.csv": pd.DataFrame({"n": [1]})},
        ...                 report=["## Counts"])
        >>> list(e.tables), e.plots
        (['counts_x.csv'], {})
    """

    tables: dict[str, Any] = field(default_factory=dict)
    report: list[str] = field(default_factory=list)
    plots: dict[str, Any] = field(default_factory=dict)


@dataclass
class Competence:
    """Whether the unsteered model does a task at all, measured from its unsteered samples
    before any steering effect is read. `checks`: named measures, each a dict with `value`,
    `ci_low`, `ci_high` and `n` (and `k` for shares); `at_chance`: the task's own rule (in its
    `competence` docstring) says the model does not do the task, so steering effects on it are
    not interpretable; `reason`: one line naming the measured numbers.

    Example:
        >>> from steer.tasks.base import Competence
        >>> c = Competence("quiz", {"order_agreement": {"value": 0.1, "ci_low": 0.02,
        ...                                             "ci_high": 0.4, "n": 10, "k": 1}},
        ...                at_chance=True, reason="at chance: ...")
        >>> c.at_chance, c.checks["order_agreement"]["value"]
        (True, 0.1)
    """

    task: str
    checks: dict[str, dict]
    at_chance: bool
    reason: str


class TaskSpec(BaseModel):
    """Base of every task type's spec: the config entry and the task itself. Subclass it with a
    literal `type`, define `items` and `run`, and register it (`steer.register_task`); the
    module docstring of steer/tasks/base.py lists the whole protocol.

    Example:
        >>> from typing import Literal
        >>> import steer
        >>> class Count(steer.TaskSpec):
        ...     type: Literal["count"] = "count"
        ...     words: list[str]
        ...     def items(self): return self.words
        ...     def run(self, ctx, conditions, seed):
        ...         return [steer.Sample(i, seed, c, {"chars": float(len(w))})
        ...                 for i, w in enumerate(self.words) for c in conditions]
        >>> t = Count(name="n", words=["calm", "alarmed"])
        >>> [s.metrics["chars"] for s in t.run(None, [steer.UNSTEERED], seed=0)]
        [4.0, 7.0]
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    type: str

    deterministic: ClassVar[bool] = False
    input_files: ClassVar[tuple[str, ...]] = ()
    _items: list | None = PrivateAttr(None)

    def check(self) -> None:
        """Checks that need files; raise TaskConfigError(field, given, expected)."""

    def items(self) -> list[str]:
        raise NotImplementedError

    def rows_per_condition(self) -> int:
        return len(self.items())

    def decode_work(self, max_new_tokens: int) -> tuple[int, int]:
        """(generations per row, new tokens per generation), for time estimates and batch
        sizing; (0, 0) for tasks that do not generate."""
        return 0, 0

    def files(self) -> list[Path]:
        """Files whose contents the results depend on (their digests key the cells)."""
        return [Path(getattr(self, f)) for f in self.input_files if getattr(self, f)]

    def key(self) -> dict:
        """What of the spec keys its cells: every field but the paths (keyed by content)."""
        return self.model_dump(mode="json", exclude=set(self.input_files))

    def run(self, ctx: Context, conditions: list[Condition], seed: int) -> list[Sample]:
        raise NotImplementedError

    def extra(self, samples: list[Sample], results, emotions: list[str]) -> Extra:
        """Tables, report lines and figures of the task's own, from its samples (in plan order)
        and its rows of the results table; `emotions`: the read-out emotions worth showing."""
        return Extra()

    def competence(self, samples: list[Sample]) -> Competence | None:
        """Does the unsteered model do this task at all? Read from the unsteered samples among
        `samples` (the task's, any conditions); None: no check for this task type, or no
        unsteered sample to check."""
        return None
