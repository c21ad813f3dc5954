"""Planning a run: the conditions, items and seeds of an experiment, cut into cells and units,
before any heavy work.

A condition is (vector, layer, scale). Every condition at scale 0 is the unsteered model, so it
is computed once per (task, item, seed) and reported under each vector at scale 0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from steer.sweep.config import ExperimentConfig
from steer.tasks.base import UNSTEERED, Condition

# `steering.scales: auto` becomes these fractions of the calibrated scale s (sweep/autoscale.py):
# [-s, -s/2, 0, s/2, s]. The config is resolved at run start; nothing plans "auto" itself.
AUTO_FRACTIONS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def auto_scales(s: float) -> list[float]:
    """The scales `steering.scales: auto` runs, for a calibrated largest fluent scale `s`.

    Example:
        >>> auto_scales(0.2)
        [-0.2, -0.1, 0.0, 0.1, 0.2]
    """
    return [round(f * s, 6) + 0.0 for f in AUTO_FRACTIONS]


def conditions(cfg: ExperimentConfig) -> list[Condition]:
    s = cfg.steering
    if s is None:
        return [UNSTEERED]
    if s.scales == "auto":
        raise ValueError("steering.scales 'auto' is resolved before planning "
                         "(steer.sweep.autoscale.resolve_auto_scales)")
    vectors = list(s.vectors) + [f"random-{k}" for k in range(s.random_controls)]
    return [Condition(v, layer, float(sc))
            for v in vectors for layer in s.layers for sc in s.scales] + [
        Condition.instructed(e, sentence) for e, sentence in s.instructions().items()]


@dataclass
class Plan:
    conditions: list[Condition]
    prompts: dict[str, list[str]]  # task -> one line of text per item
    seeds: list[int]
    single_seed_tasks: frozenset[str] = frozenset()  # deterministic tasks

    @property
    def unique_conditions(self) -> list[Condition]:
        """Distinct computations: UNSTEERED first (shared by every condition at scale 0), then
        the steered conditions."""
        out = [c for c in self.conditions if not c.is_unsteered]
        if any(c.is_unsteered for c in self.conditions):
            out.insert(0, UNSTEERED)
        return out

    @property
    def n_samples(self) -> int:
        """Samples to compute: deterministic tasks (read-outs, log-probabilities) use the first
        seed only."""
        n = sum(len(p) * (1 if t in self.single_seed_tasks else len(self.seeds))
                for t, p in self.prompts.items())
        return len(self.unique_conditions) * n


def make_plan(cfg: ExperimentConfig) -> Plan:
    return Plan(conditions(cfg), {t.name: t.items() for t in cfg.tasks}, list(cfg.seeds),
                frozenset(t.name for t in cfg.tasks if t.deterministic))


# ---------------------------------------------------------------- cells and units
#
# A cell is one (task, condition, seed): every item of the task under one condition. It is the
# unit of resumption: its results are written atomically when it is done, under a key that hashes
# every setting that changes them (and nothing that does not: batch size, device, backend).
# Cells are executed in units: a fixed, config-determined group of cells of one task and seed whose
# rows share forward passes. Because the grouping depends only on the config, a resumed run
# computes each unit exactly as an uninterrupted run would.

# Bump when a change to steer alters what an existing cell would contain or how cells are keyed.
# 2: each task type keys only its own fields, and input files by content, not by path.
# 3: sampled tokens no longer depend on a row's batch (steer.lm.decode._draw); a sample flagged
#    `nonfinite`; the code task judged outside an OS-level sandbox.
CELL_FORMAT = 3


@dataclass(frozen=True)
class Cell:
    task: str
    cond: Condition  # UNSTEERED: shared by every condition at scale 0
    seed: int
    key: str


@dataclass
class Unit:
    task: str
    seed: int
    cells: list[Cell]
    rows: int  # forward-pass rows it computes (items x option orders x conditions)

    @property
    def conditions(self) -> list[Condition]:
        return [c.cond for c in self.cells]


def _digest_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cell_keys(cfg: ExperimentConfig, plan: Plan) -> dict[tuple[str, Condition, int], str]:
    """Key of every cell of the plan: a hash of the settings its results depend on (file contents
    included, not their paths), leaving out batch size, device and backend."""
    g = cfg.generation
    common = {
        "format": CELL_FORMAT,
        "model": [cfg.model.name, cfg.model.dtype],
        "vectors": [cfg.vectors.model_dump(mode="json", exclude={"file", "corpus", "neutral"}),
                    cfg.vectors.corpus == "builtin",
                    [_digest_file(p) for p in cfg.vectors.files()]],
        "generation": [g.max_new_tokens, g.temperature, g.top_p, g.system_prompt],
        "metrics": sorted(cfg.metrics),
        "readout": cfg.readout.model_dump(mode="json"),
        "positions": cfg.steering.positions if cfg.steering else None,
    }
    keys = {}
    for task in cfg.tasks:
        spec = [task.key(), [_digest_file(p) for p in task.files()]]
        for cond in plan.unique_conditions:
            c = None if cond.is_unsteered else [cond.vector, cond.layer, cond.scale]
            if cond.is_prompted:  # the sentence is what the condition is
                c.append(cond.prompt)
            for seed in task_seeds(plan, task.name):
                blob = json.dumps([common, spec, c, seed], sort_keys=True, default=str)
                keys[(task.name, cond, seed)] = hashlib.sha256(blob.encode()).hexdigest()[:20]
    return keys


def task_seeds(plan: Plan, task: str) -> list[int]:
    return plan.seeds[:1] if task in plan.single_seed_tasks else plan.seeds


UNIT_ROWS_AUTO = 256  # rows per unit when the batch size is found at run time


def make_units(cfg: ExperimentConfig, plan: Plan) -> list[Unit]:
    """All units of the plan, in a fixed order: by task, seed, then conditions (unsteered first),
    as many conditions per unit as fill one batch of the configured size."""
    keys = cell_keys(cfg, plan)
    bs = cfg.generation.batch_size
    target = bs if isinstance(bs, int) else UNIT_ROWS_AUTO
    units = []
    for task in cfg.tasks:
        per = task.rows_per_condition()
        chunk = max(1, target // max(per, 1))
        conds = plan.unique_conditions
        for seed in task_seeds(plan, task.name):
            for i in range(0, len(conds), chunk):
                cells = [Cell(task.name, c, seed, keys[(task.name, c, seed)])
                         for c in conds[i:i + chunk]]
                units.append(Unit(task.name, seed, cells, per * len(cells)))
    return units
