"""Task types beyond plain generation: one module each (choice, preference, code).

Each module's `execute(ctx, task)` returns `Outcome`s: one per (item, seed, condition) with
its metric values; the runner records them (the shared baseline under every vector at scale
0) and writes them like any other task's."""

from __future__ import annotations

from dataclasses import dataclass, field

from steer.plan import Condition, direction_name
from steer.steering import Intervention


@dataclass
class Outcome:
    item: int
    seed: int
    cond: Condition | None  # None: the shared unsteered baseline
    metrics: dict[str, float]
    extra: dict = field(default_factory=dict)


@dataclass
class TaskContext:
    model: object
    vectors: object
    cfg: object  # ExperimentConfig
    plan: object  # Plan
    readout_layer: int
    emotions: list[str]
    quiet: bool = False

    def interventions(self, cond: Condition | None, seed: int) -> tuple[Intervention, ...]:
        if cond is None:
            return ()
        return (Intervention(direction_name(cond, seed), cond.layer, cond.scale,
                             self.cfg.steering.positions),)

    @property
    def system(self) -> str | None:
        return self.cfg.generation.system_prompt
