"""Plan and execute an experiment: conditions x items x seeds, batched, then scored and written.

A condition is (vector, layer, scale). Every condition at scale 0 is the unsteered model, so it is
computed once per (task, item, seed) and reported under each vector at scale 0. Sampling uses
one RNG stream per (task, item, seed), shared by all conditions (common random numbers): the
differences between conditions then come from steering, not from sampling luck.

The work is cut into cells (task x condition x seed, see plan.py), executed in units by a Worker
(execute.py) in this process or on a Ray cluster (distributed.py). Only this driver writes the run
directory: each finished cell atomically, so that a rerun of the same command computes only what
is missing and a killed run loses at most the cells in flight. Results, summary, plots and report
are then rebuilt from all cells of the plan, in plan order, so that they do not depend on how
often the run was interrupted.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from steer import progress
from steer.config import ExperimentConfig, to_yaml
from steer.errors import SteerError
from steer.metrics.stats import bootstrap_ci
from steer.plan import Plan, Unit, make_plan, make_units
from steer.runs import RunDir


def summarize(results: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """One row per (task, vector, layer, scale, metric): mean and a 95% bootstrap CI.

    Seeds of one item are averaged first and items are resampled (a cluster bootstrap), since
    samples of the same prompt are not independent. Random directions are also pooled as
    vector `random` when there are several (each item under each direction is one unit)."""
    # the bootstrap unit: an item, or for the pooled random control an (item, direction)
    frames = [results.assign(unit=results["item"].astype(str))]
    rnd = results[results.vector.str.startswith("random-")]
    if rnd.vector.nunique() > 1:
        frames.append(rnd.assign(vector="random", unit=rnd["item"].astype(str) + "/" + rnd.vector))
    df = pd.concat(frames, ignore_index=True).dropna(subset=["value"])
    keys = ["task", "vector", "layer", "scale", "metric"]
    grouped = df.groupby(keys, sort=True)["value"]
    means, sizes = grouped.mean(), grouped.size()
    per_item = df.groupby(keys + ["unit"], sort=True)["value"].mean()
    rows = []
    for key, g in per_item.groupby(level=list(range(len(keys))), sort=True):
        mean, lo, hi = bootstrap_ci(g.to_numpy(), n_boot=n_boot)
        rows.append(dict(zip(keys, key), mean=means[key], ci_low=lo, ci_high=hi,
                         n=int(sizes[key])))
    return pd.DataFrame(rows)


class TooManyFailures(SteerError):
    pass


@dataclass
class SweepOutcome:
    run: RunDir
    n_cells: int
    reused: int = 0
    computed: int = 0
    failures: list[dict] = field(default_factory=list)  # one per failed cell
    stopped_early: bool = False


def run_dir_for(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> RunDir:
    return RunDir(Path(run_dir)) if run_dir else RunDir.open(cfg.output_dir, cfg.name)


@contextmanager
def _sigterm_interrupts():
    """SIGTERM stops a run the way Ctrl-C does: finished cells are kept, the rest is not started."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def describe_work(cfg: ExperimentConfig, source: str | Path, run_dir=None) -> dict:
    """What `steer run --dry-run` prints: cells, how many are done, and the work left."""
    plan = make_plan(cfg, source)
    units = make_units(cfg, plan, source)
    run = run_dir_for(cfg, run_dir)
    done, failed = run.done_keys(), run.failure_keys()
    cells = [c for u in units for c in u.cells]
    todo = [u for u in units if any(c.key not in done for c in u.cells)]
    kinds = {t.name: t for t in cfg.tasks}
    gen_rows = sum(u.rows * (kinds[u.task].attempts if kinds[u.task].type == "code" else 1)
                   for u in todo if kinds[u.task].type in ("generate", "code"))
    new_tokens = sum(
        u.rows * (kinds[u.task].max_new_tokens or 192) * kinds[u.task].attempts
        if kinds[u.task].type == "code" else u.rows * cfg.generation.max_new_tokens
        for u in todo if kinds[u.task].type in ("generate", "code"))
    out = {"run_dir": str(run.path), "conditions": len(plan.conditions),
           "computations": len(plan.unique_conditions), "seeds": len(plan.seeds),
           "cells": len(cells),
           "done": sum(c.key in done for c in cells),
           "failed_before": sum(c.key in failed and c.key not in done for c in cells),
           "pending_cells": sum(c.key not in done for c in cells),
           "pending_units": len(todo), "pending_rows": sum(u.rows for u in todo),
           "generated_rows": gen_rows, "max_new_tokens_total": new_tokens,
           "by_task": {t.name: sum(c.key not in done for c in cells if c.task == t.name)
                       for t in cfg.tasks}}
    rate = run.read_manifest().get("seconds_per_row")
    if rate:
        out["estimated_s"] = round(rate * out["pending_rows"], 1)
    return out


def run_experiment(cfg: ExperimentConfig, source: str | Path, quiet: bool = False,
                   model=None, backend: str = "local", max_failures: int | None = None,
                   run_dir: str | Path | None = None, ray_address: str | None = None,
                   workers: int | None = None) -> SweepOutcome:
    """Run (or finish) `cfg` in its run directory. Failed cells are recorded and the others go
    on; `max_failures` stops after that many failed cells. On Ctrl-C or SIGTERM the finished
    cells are kept and KeyboardInterrupt propagates. If setting up fails (e.g. the model does not
    load), the manifest says where and why (status "failed") and the error propagates."""
    t0 = time.perf_counter()
    plan = make_plan(cfg, source)
    units = make_units(cfg, plan, source)
    run = run_dir_for(cfg, run_dir)
    run.lock()
    run.clean_temporaries()
    run.write_config(to_yaml(cfg))
    previous = run.read_manifest()
    done = run.done_keys()
    n_cells = sum(len(u.cells) for u in units)
    pending = [u for u in units if any(c.key not in done for c in u.cells)]
    outcome = SweepOutcome(run, n_cells,
                           reused=sum(c.key in done for u in units for c in u.cells))
    base = {"name": cfg.name, "config_source": str(source), "backend": backend,
            "history": previous.get("history", [])}
    timings: dict[str, float] = {}

    def on_result(unit: Unit, status: str, payload: dict) -> None:
        # A unit always runs whole (so its batches are those of an uninterrupted run), but
        # cells already on disk are left as they are.
        todo = [c for c in unit.cells if c.key not in done]
        if status == "ok":
            for cell in todo:
                run.write_cell(payload[cell.key])
            outcome.computed += len(todo)
        else:
            for cell in todo:
                info = {**_cell_label(cell), **payload, "unit_cells": len(unit.cells)}
                run.write_failure(cell.key, info)
                outcome.failures.append(info)
            if max_failures is not None and len(outcome.failures) >= max_failures:
                raise TooManyFailures(f"stopped after {len(outcome.failures)} failed cells "
                                      f"(--max-failures {max_failures})")

    info = previous.get("worker") if not pending else None
    t = time.perf_counter()
    with _sigterm_interrupts():
        try:
            if pending or info is None:
                info = _execute(cfg, plan, source, pending, on_result, quiet, model, backend,
                                ray_address, workers)
        except TooManyFailures:
            outcome.stopped_early = True
        except KeyboardInterrupt:
            run.write_manifest({**base, "status": "interrupted", "cells": _counts(outcome),
                                "history": base["history"] + [_visit(outcome, "interrupted")]})
            raise
        except BaseException as e:
            import traceback

            run.write_manifest({**base, "status": "failed", "error": f"{type(e).__name__}: {e}",
                                "traceback": traceback.format_exc(), "cells": _counts(outcome),
                                "history": base["history"] + [_visit(outcome, "failed")]})
            raise
    timings["execute"] = time.perf_counter() - t
    if info is None:  # stopped before any worker reported
        info = previous.get("worker") or {}
    t = time.perf_counter()
    stats = aggregate(cfg, plan, units, run, info, quiet)
    timings["aggregate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    status = "complete" if not outcome.failures and not outcome.stopped_early else "incomplete"
    now_done = run.done_keys()
    rows_done = sum(u.rows for u in pending if all(c.key in now_done for c in u.cells))
    setup = sum(v for k, v in info.get("timings_s", {}).items() if k in ("load_model", "vectors"))
    rate = (max(timings["execute"] - setup, 0.0) / rows_done if rows_done
            else previous.get("seconds_per_row"))
    run.write_manifest({
        **base, "status": status, "worker": info, "model": info.get("model"),
        "seeds": plan.seeds, "readout_layer": info.get("readout_layer"),
        "readout_emotions": info.get("readout_emotions"), "vectors": info.get("vectors"),
        "median_resid_norm": info.get("median_resid_norm"),
        "batch_size": info.get("batch_size"),
        "n_conditions": len(plan.conditions), **stats, "cells": _counts(outcome),
        "seconds_per_row": rate,
        "timings_s": {**info.get("timings_s", {}),
                      **{k: round(v, 2) for k, v in timings.items()}},
        "history": base["history"] + [_visit(outcome, status)],
    })
    return outcome


def _cell_label(cell) -> dict:
    c = cell.cond
    return {"key": cell.key, "task": cell.task, "seed": cell.seed,
            "vector": None if c is None else c.vector, "layer": None if c is None else c.layer,
            "scale": 0.0 if c is None else c.scale}


def _counts(o: SweepOutcome) -> dict:
    return {"total": o.n_cells, "reused": o.reused, "computed": o.computed,
            "failed": len(o.failures)}


def _visit(o: SweepOutcome, status: str) -> dict:
    return {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": status, **_counts(o)}


def _execute(cfg, plan: Plan, source, pending: list[Unit], on_result, quiet, model, backend,
             ray_address, workers) -> dict:
    """Run the pending units on the chosen backend; returns the worker's description."""
    total = sum(u.rows for u in pending)
    label = f"{sum(len(u.cells) for u in pending)} cells, rows"
    if backend == "ray":
        from steer.distributed import run_ray

        with progress.task(label, total, quiet) as adv:
            def report(unit, status, payload):
                on_result(unit, status, payload)
                adv(unit.rows)

            return run_ray(cfg, plan, source, pending, report, ray_address, workers, quiet)
    from steer.execute import Worker

    worker = Worker(cfg, plan, source, model, quiet)
    with progress.task(label, total, quiet) as adv:
        for unit in pending:
            on_result(unit, *worker.run_unit_safely(unit))
            adv(unit.rows)
    return worker.info()


def aggregate(cfg: ExperimentConfig, plan: Plan, units: list[Unit], run: RunDir, info: dict,
              quiet: bool = True) -> dict:
    """Rebuild samples, results, summary, plots and report from every finished cell of the plan,
    in plan order."""
    from steer.execute import cond_from_json
    from steer.tasks.base import Outcome

    kinds = {t.name: t.type for t in cfg.tasks}
    done = run.done_keys()
    samples, records = [], []
    item_outcomes: dict[str, list[Outcome]] = {}
    for unit in units:
        for cell in unit.cells:
            if cell.key not in done:
                continue
            payload = run.read_cell(cell.key)
            cond = cond_from_json(payload["cond"])
            for s in payload["samples"]:
                item, seed, metrics, extra = s["item"], s["seed"], s["metrics"], s["extra"]
                samples.append({
                    "task": cell.task, "item": item, "prompt": plan.prompts[cell.task][item],
                    "seed": seed, "vector": None if cond is None else cond.vector,
                    "layer": None if cond is None else cond.layer,
                    "scale": 0.0 if cond is None else cond.scale, **extra, "metrics": metrics})
                # The shared baseline is reported under every vector and layer at scale 0.
                targets = [c for c in plan.conditions if c.is_baseline] if cond is None else [cond]
                for c in targets:
                    for name, value in metrics.items():
                        records.append((cell.task, item, c.vector, c.layer, c.scale, seed, name,
                                        value))
                if kinds[cell.task] == "preference":
                    item_outcomes.setdefault(cell.task, []).append(
                        Outcome(item, seed, cond, metrics, extra))
    results = pd.DataFrame.from_records(
        records, columns=["task", "item", "vector", "layer", "scale", "seed", "metric", "value"])
    run.write_samples(samples)
    run.write_results(results)
    n_tokens = sum(int(s.get("n_tokens", 0)) for s in samples)
    stats = {"n_samples": len(samples), "generated_tokens": n_tokens}
    if results.empty:
        return stats
    summary = summarize(results)
    run.write_summary(summary)
    _report(cfg, plan, run, results, summary, item_outcomes, info)
    return stats


def _report(cfg, plan, run, results, summary, item_outcomes, info) -> None:
    from steer.report import (
        dose_response_plots,
        effects,
        report_markdown,
        value_plots,
        value_trends,
    )

    plots = dose_response_plots(summary, run.plots, [c.vector for c in plan.conditions])
    values = {t.name: t.values for t in cfg.tasks if t.type == "readout" and t.values}
    trend_by_value = None
    if values:
        emotions = info.get("readout_emotions") or []
        plots += value_plots(results, values, list(cfg.readout.emotions or emotions[:6]),
                             run.plots)
        trend_by_value = value_trends(results, values)
    eff = effects(results) if cfg.steering else pd.DataFrame()
    if not eff.empty:
        run.write_table("effects.csv", eff)
    extra: list[str] = []
    for task_name, outcomes in item_outcomes.items():
        from steer.tasks.preference import write_tables

        extra += write_tables(run, task_name, outcomes, results, plan, cfg)
    run.write_report(report_markdown(cfg, summary, plots, trend_by_value, eff, extra))
