"""Planning a run: the conditions, prompts and seeds of an experiment, before any heavy work.

A condition is (vector, layer, scale). Every condition at scale 0 is the unsteered model, so it
is computed once per (task, item, seed) and reported under each vector at scale 0.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from steer.config import ExperimentConfig, task_prompts


@dataclass(frozen=True)
class Condition:
    vector: str
    layer: int
    scale: float

    @property
    def is_baseline(self) -> bool:
        return self.scale == 0

    @property
    def is_random(self) -> bool:
        return self.vector.startswith("random-")


def conditions(cfg: ExperimentConfig) -> list[Condition]:
    s = cfg.steering
    if s is None:
        return [Condition("none", -1, 0.0)]  # unsteered only; layer -1 marks "no layer"
    vectors = list(s.vectors) + [f"random-{k}" for k in range(s.random_controls)]
    return [Condition(v, layer, float(sc))
            for v in vectors for layer in s.layers for sc in s.scales]


def row_seed(*parts) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest()[:12], 16)


def direction_name(cond: Condition, seed: int) -> str:
    """Random control k draws a fresh direction for every seed, so that seeds sample directions
    as well as texts and the control's CI covers direction-to-direction variation."""
    if cond.is_random:
        k = int(cond.vector.split("-", 1)[1])
        return f"random-{row_seed('random', k, seed) % 10**9}"
    return cond.vector


@dataclass
class Plan:
    conditions: list[Condition]
    prompts: dict[str, list[str]]  # task -> prompts
    seeds: list[int]
    single_seed_tasks: frozenset[str] = frozenset()  # deterministic tasks

    @property
    def unique_conditions(self) -> list[Condition | None]:
        """Distinct computations: steered conditions, plus None for the shared baseline."""
        out: list[Condition | None] = [c for c in self.conditions if not c.is_baseline]
        if any(c.is_baseline for c in self.conditions):
            out.insert(0, None)
        return out

    @property
    def n_samples(self) -> int:
        """Samples to compute: deterministic tasks (read-outs, log-probabilities) use the first
        seed only."""
        n = sum(len(p) * (1 if t in self.single_seed_tasks else len(self.seeds))
                for t, p in self.prompts.items())
        return len(self.unique_conditions) * n


def make_plan(cfg: ExperimentConfig, source: str | Path | None = None) -> Plan:
    return Plan(conditions(cfg), {t.name: task_prompts(t, source) for t in cfg.tasks},
                list(cfg.seeds),
                frozenset(t.name for t in cfg.tasks
                          if t.type in ("readout", "choice", "preference")))
