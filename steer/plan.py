"""Planning a run: the conditions, prompts and seeds of an experiment, before any heavy work.

A condition is (vector, layer, scale). Every condition at scale 0 is the unsteered model, so it
is computed once per (task, item, seed) and reported under each vector at scale 0.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from steer.config import ITEM_TASKS, ExperimentConfig, TaskSpec, task_prompts


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


# ---------------------------------------------------------------- cells and units
#
# A cell is one (task, condition, seed): every item of the task under one condition. It is the
# unit of resumption: its results are written atomically when it is done, under a key that hashes
# every setting that changes them (and nothing that does not: batch size, device, backend).
# Cells are executed in units: a fixed, config-determined group of cells of one task and seed whose
# rows share forward passes. Because the grouping depends only on the config, a resumed run
# computes each unit exactly as an uninterrupted run would.

CELL_FORMAT = 1  # bump when a change to steer alters what an existing cell would contain


@dataclass(frozen=True)
class Cell:
    task: str
    cond: Condition | None  # None: the unsteered baseline, shared by every condition at scale 0
    seed: int
    key: str


@dataclass
class Unit:
    task: str
    seed: int
    cells: list[Cell]
    rows: int  # forward-pass rows it computes (items x option orders x conditions)

    @property
    def conditions(self) -> list[Condition | None]:
        return [c.cond for c in self.cells]


def _digest_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _task_files(task: TaskSpec, base: Path) -> list[Path]:
    from steer.tasks.items import ACTIVITIES, CHOICE_SUITES, CODE_SUITES, resolve

    if task.type in ITEM_TASKS:
        builtin = {"choice": CHOICE_SUITES, "preference": (ACTIVITIES,), "code": CODE_SUITES}
        return [resolve(task.suite or task.file, builtin[task.type], base)]
    if task.prompts_file:
        p = Path(task.prompts_file)
        return [p if p.exists() else base / p]
    return []


def _vector_files(cfg: ExperimentConfig) -> list[Path]:
    from steer.vectors.corpus import BUILTIN, builtin_paths

    v = cfg.vectors
    if v.file:
        return [Path(v.file)]
    files = list(builtin_paths()) if v.corpus == BUILTIN else [Path(v.corpus)]
    if v.neutral:
        files.append(Path(v.neutral))
    return files


def cell_keys(cfg: ExperimentConfig, plan: Plan, source: str | Path | None = None
              ) -> dict[tuple[str, Condition | None, int], str]:
    """Key of every cell of the plan: a hash of the settings its results depend on (file contents
    included), leaving out batch size, device and backend."""
    base = Path(source).parent if source is not None else Path(".")
    g = cfg.generation
    common = {
        "format": CELL_FORMAT,
        "model": [cfg.model.name, cfg.model.dtype],
        "vectors": [cfg.vectors.model_dump(mode="json"),
                    [_digest_file(p) for p in _vector_files(cfg)]],
        "generation": [g.max_new_tokens, g.temperature, g.top_p, g.system_prompt],
        "metrics": sorted(cfg.metrics),
        "readout": cfg.readout.model_dump(mode="json"),
        "positions": cfg.steering.positions if cfg.steering else None,
    }
    keys = {}
    for task in cfg.tasks:
        spec = [task.model_dump(mode="json"), [_digest_file(p) for p in _task_files(task, base)]]
        for cond in plan.unique_conditions:
            c = None if cond is None else [cond.vector, cond.layer, cond.scale]
            for seed in task_seeds(plan, task.name):
                blob = json.dumps([common, spec, c, seed], sort_keys=True, default=str)
                keys[(task.name, cond, seed)] = hashlib.sha256(blob.encode()).hexdigest()[:20]
    return keys


def task_seeds(plan: Plan, task: str) -> list[int]:
    return plan.seeds[:1] if task in plan.single_seed_tasks else plan.seeds


def rows_per_condition(task: TaskSpec, n_items: int) -> int:
    if task.type == "choice":
        return 2 * n_items  # at least two option orders
    if task.type == "preference":
        k = (n_items - 1) / 2 if task.pairs == "all" else task.pairs
        return max(1, int(2 * n_items * k))
    return n_items


UNIT_ROWS_AUTO = 256  # rows per unit when the batch size is found at run time


def make_units(cfg: ExperimentConfig, plan: Plan, source: str | Path | None = None
               ) -> list[Unit]:
    """All units of the plan, in a fixed order: by task, seed, then conditions (baseline first),
    as many conditions per unit as fill one batch of the configured size."""
    keys = cell_keys(cfg, plan, source)
    bs = cfg.generation.batch_size
    target = bs if isinstance(bs, int) else UNIT_ROWS_AUTO
    units = []
    for task in cfg.tasks:
        per = rows_per_condition(task, len(plan.prompts[task.name]))
        chunk = max(1, target // max(per, 1))
        conds = plan.unique_conditions
        for seed in task_seeds(plan, task.name):
            for i in range(0, len(conds), chunk):
                cells = [Cell(task.name, c, seed, keys[(task.name, c, seed)])
                         for c in conds[i:i + chunk]]
                units.append(Unit(task.name, seed, cells, per * len(cells)))
    return units
