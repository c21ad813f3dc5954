"""What every task module returns (Outcome) and receives (TaskContext)."""

from __future__ import annotations

from dataclasses import dataclass, field

from steer.plan import Condition


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
    # What this call computes: a unit of the plan (some conditions, one seed); None means all.
    conditions: list | None = None
    seeds: list[int] | None = None
    batch_size: int = 32

    def __post_init__(self):
        if self.conditions is None:
            self.conditions = list(self.plan.unique_conditions)
        if self.seeds is None:
            self.seeds = list(self.plan.seeds)

    def interventions(self, cond: Condition | None, seed: int) -> tuple:
        from steer.plan import direction_name
        from steer.steering import Intervention

        if cond is None:
            return ()
        return (Intervention(direction_name(cond, seed), cond.layer, cond.scale,
                             self.cfg.steering.positions),)

    @property
    def system(self) -> str | None:
        return self.cfg.generation.system_prompt
