"""One run, top to bottom: plan the cells, execute the missing ones (here or on Ray), write each
as it finishes, then rebuild every table, figure and report from all of them.

A condition is (vector, layer, scale). Every condition at scale 0 is the unsteered model, so it is
computed once per (task, item, seed) and reported under each vector at scale 0. Sampling uses
one RNG stream per (task, item, seed), shared by all conditions (common random numbers): the
differences between conditions then come from steering, not from sampling luck.

The work is cut into cells (task x condition x seed, plan.py), executed in units by a Worker
(worker.py) in this process or on a Ray cluster (ray.py). Only the driver writes the run
directory (rundir.py): each finished cell atomically, so that a rerun of the same command
computes only what is missing and a killed run loses at most the cells in flight. Results,
summary, plots and report are then rebuilt from all cells of the plan, in plan order, so that
they do not depend on how often the run was interrupted.

The manifest says `running` from before the directory's first change until the run ends, when a
`finally` writes how it ended (SIGTERM is made to stop a run as Ctrl-C does, in any phase), with
cell counts taken from the disk. So a run killed at any point, even with SIGKILL while adding a
scale to a complete run, never leaves a manifest saying `complete` with cells missing.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from steer import progress
from steer.errors import InputError, RunDirError, TooManyFailures, WriteError
from steer.sweep.autoscale import planned_config, resolve_auto_scales
from steer.sweep.config import ExperimentConfig
from steer.sweep.plan import CELL_FORMAT, Plan, Unit, make_plan, make_units
from steer.sweep.rundir import Run, RunDir
from steer.tasks.base import Condition, Sample


def run(cfg: ExperimentConfig, *, run_dir: str | Path | None = None, backend: str = "local",
        workers: int | None = None, ray_address: str | None = None,
        max_failures: int | None = None, quiet: bool = False, model=None) -> Run:
    """Run `cfg`, or finish it: cells already done in its run directory (`<output_dir>/<name>`,
    or `run_dir`) are reused. Failed cells are recorded and the others go on (`max_failures`
    stops after that many); the returned Run's status says how it ended. On Ctrl-C or SIGTERM
    the finished cells are kept and KeyboardInterrupt propagates. `backend="ray"` spreads the
    cells over a Ray cluster (`ray_address`, or a local one with `workers` actors). `model`: an
    already-loaded model to use instead of loading `cfg.model`.

    Example:
        >>> import steer, tempfile
        >>> cfg = steer.load_config("configs/smoke.yaml",
        ...                         overrides=[f"output_dir={tempfile.mkdtemp()}", "seeds=[0]"])
        >>> run = steer.run(cfg, quiet=True)
        >>> run.status, run.manifest.cells.computed, run.path.name
        ('complete', 9, 'smoke')
    """
    if isinstance(cfg.model.name, list):
        raise InputError(f"{cfg.source}: model.name lists {len(cfg.model.name)} models; run each "
                         "of cfg.per_model()")
    if backend not in ("local", "ray"):
        raise InputError(f"backend: got {backend!r}, expected local or ray")
    t0 = time.perf_counter()
    # From here on SIGTERM stops the run as Ctrl-C does, in every phase (loading, cells,
    # aggregating), and whatever happens the manifest is brought up to date in `finally`.
    with interrupts():
        rd = run_dir_for(cfg, run_dir)
        rd.lock()
        # `scales: auto`: calibrated, or read back so that a resume plans the same cells
        cfg, model, auto = resolve_auto_scales(cfg, rd.read_calibration(), model, quiet)
        plan = make_plan(cfg)
        units = make_units(cfg, plan)
        book = Ledger(rd, cfg, plan, units, backend)
        book.base.update(auto.manifest if auto else {})
        status, extra = "failed", {}
        try:
            # Said on disk before anything else in the directory changes: a run killed with
            # SIGKILL from here on leaves "running", never a stale "complete" (say, of the run
            # that a scale or seed is being added to). The next run reconciles it.
            book.start()
            rd.clean_temporaries()
            rd.write_config(cfg.to_yaml())
            if auto:
                auto.write(rd)
            status, extra = _run_locked(cfg, plan, units, rd, book, backend, workers,
                                        ray_address, max_failures, quiet, model, t0)
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException as e:
            extra = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
            raise
        finally:
            book.finish(status, extra)
    return Run(rd.path)


def _run_locked(cfg, plan, units, rd, book, backend, workers, ray_address, max_failures, quiet,
                model, t0) -> tuple[str, dict]:
    """Execute the cells still missing, then aggregate; returns the status and what the final
    manifest says besides the ledger's own keys."""
    done, previous = book.done_before, book.previous
    pending = [u for u in units if any(c.key not in done for c in u.cells)]
    for problem in book.unsound:
        progress.console.print(f"notice: {rd.path / problem}; computing that cell again",
                               highlight=False, soft_wrap=True)
    on_disk = rd.done_keys()
    if on_disk and not done and previous.get("cell_format", 1) != CELL_FORMAT and not quiet:
        progress.console.print(
            f"note: {rd.path} holds {len(on_disk)} cells of an older steer (cell format "
            f"{previous.get('cell_format', 1)}, now {CELL_FORMAT}); they are kept but not reused",
            highlight=False, soft_wrap=True)
    failures: list[dict] = []

    def on_result(unit: Unit, status: str, payload: dict) -> None:
        # A unit always runs whole (so its batches are those of an uninterrupted run), but
        # cells already on disk are left as they are.
        todo = [c for c in unit.cells if c.key not in done]
        if status == "ok":
            for cell in todo:
                rd.write_cell(payload[cell.key])
            return
        for cell in todo:
            info = {**_cell_label(cell), **payload, "unit_cells": len(unit.cells)}
            rd.write_failure(cell.key, info)
            failures.append(info)
        if max_failures is not None and len(failures) >= max_failures:
            raise TooManyFailures(f"stopped after {len(failures)} failed cells "
                                  f"(--max-failures {max_failures})")

    info = previous.get("worker") if not pending else None
    stopped_early = False
    t = time.perf_counter()
    try:
        if pending or info is None:
            info = _execute(cfg, plan, pending, on_result, quiet, model, backend, ray_address,
                            workers)
    except TooManyFailures:
        stopped_early = True
    timings = {"execute": time.perf_counter() - t}
    if info is None:  # stopped before any worker reported
        info = previous.get("worker") or {}
    t = time.perf_counter()
    stats = aggregate(cfg, plan, units, rd, info)
    timings["aggregate"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    # Complete means every cell of the plan is on disk, checked there, not inferred.
    status = "complete" if book.all_done() and not stopped_early else "incomplete"
    now_done = rd.done_keys()
    rows_done = sum(u.rows for u in pending if all(c.key in now_done for c in u.cells))
    setup = sum(v for k, v in info.get("timings_s", {}).items() if k in ("load_model", "vectors"))
    rate = (max(timings["execute"] - setup, 0.0) / rows_done if rows_done
            else previous.get("seconds_per_row"))
    return status, {
        "stopped_early": stopped_early, "worker": info,
        "model": info.get("model"), "seeds": plan.seeds,
        "readout_layer": info.get("readout_layer"),
        "readout_emotions": info.get("readout_emotions"), "vectors": info.get("vectors"),
        "median_resid_norm": info.get("median_resid_norm"),
        "batch_size": info.get("batch_size"),
        "n_conditions": len(plan.conditions), **stats,
        "seconds_per_row": rate,
        "timings_s": {**info.get("timings_s", {}),
                      **{k: round(v, 2) for k, v in timings.items()}},
    }


def run_dir_for(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> RunDir:
    """The run directory of `cfg`: `run_dir` if given, else `<output_dir>/<name>`, which must
    lie inside `output_dir` (a RunDirError naming `name` otherwise)."""
    if run_dir:
        return RunDir(Path(run_dir))
    try:
        return RunDir.open(cfg.output_dir, cfg.name)
    except RunDirError as e:
        raise RunDirError(f"{cfg.source}: {e}") from None


# ---------------------------------------------------------------- the manifest and signals

# What a manifest written before the run ends keeps from the one before it: how the cells on
# disk were made, which later runs reuse (not the tables' statistics, which the aggregation
# rewrites).
_CARRIED = ("worker", "model", "seeds", "readout_layer", "readout_emotions", "vectors",
            "median_resid_norm", "batch_size", "seconds_per_row", "n_conditions")


class Ledger:
    """This run's entries in manifest.json. `start()` marks the directory running; `finish()`
    writes how the run ended. Cell counts are always counted on disk when written (reused: the
    plan's cells there at the start; computed: those added since; failed: the plan's cells with
    a failure record and no result), so an interruption at any point leaves them true."""

    def __init__(self, rd: RunDir, cfg: ExperimentConfig, plan: Plan, units: list[Unit],
                 backend: str):
        self.rd = rd
        self.keys = {c.key for u in units for c in u.cells}
        self.previous = rd.read_manifest()
        self.done_before = rd.done_keys() & self.keys
        self.unsound: list[str] = []
        self.base = {"name": cfg.name, "config_source": cfg.source, "backend": backend,
                     "cell_format": CELL_FORMAT, "seeds": plan.seeds,
                     "n_conditions": len(plan.conditions)}
        self.history = [dict(h) for h in self.previous.get("history", [])]
        if self.previous.get("status") == "running" and self.history:
            # We hold the lock, so the session that wrote "running" is gone: it was killed.
            self.history[-1]["status"] = "killed"

    def counts(self) -> dict[str, int]:
        now = self.rd.done_keys() & self.keys
        return {"total": len(self.keys), "reused": len(self.done_before),
                "computed": len(now - self.done_before),
                "failed": len((self.rd.failure_keys() & self.keys) - now)}

    def all_done(self) -> bool:
        return self.keys <= self.rd.done_keys()

    def _manifest(self, status: str, extra: dict) -> dict:
        counts = self.counts()
        entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), "status": status, **counts}
        carried = {k: self.previous[k] for k in _CARRIED if k in self.previous}
        return {**carried, **self.base, **extra, "status": status, "cells": counts,
                "history": self.history + [entry]}

    def start(self) -> None:
        with deferred_signals():
            self.rd.write_manifest(self._manifest("running", {}))
        # Reconcile with the disk (now that the manifest no longer vouches for it): a cell that
        # is not whole is set aside and computed again, never read into the results.
        self.unsound = self.rd.set_aside_unsound_cells(self.keys)
        self.done_before = self.rd.done_keys() & self.keys

    def finish(self, status: str, extra: dict) -> None:
        # Signals wait until the manifest is written (a second Ctrl-C cannot leave it stale).
        with deferred_signals():
            try:
                self.rd.write_manifest(self._manifest(status, extra))
            except WriteError:
                if status in ("complete", "incomplete"):
                    raise
                # Already on the way out with an error (often this one: a full disk): the
                # manifest keeps saying "running", which is true enough and never "complete".


@contextmanager
def interrupts():
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, while the body runs: finished cells are
    kept, the rest is not started, and `finally` blocks (the manifest's) run. A signal the
    parent set to be ignored stays ignored; outside the main thread this does nothing.

    Example:
        >>> import os, signal
        >>> try:
        ...     with interrupts():
        ...         os.kill(os.getpid(), signal.SIGTERM)
        ...         time.sleep(5)  # cut short: the handler raises
        ... except KeyboardInterrupt:
        ...     print("stopped")
        stopped
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise KeyboardInterrupt

    old = signal.getsignal(signal.SIGTERM)
    if old != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if old != signal.SIG_IGN:
            signal.signal(signal.SIGTERM, old if old is not None else signal.SIG_DFL)


@contextmanager
def deferred_signals():
    """Hold SIGINT and SIGTERM back while the body runs, then deliver them to the handlers that
    were there before, so that a write that must happen is not cut short. (A signal mask would
    not do: the kernel hands a process's signal to any thread not blocking it, and torch has
    threads.) Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: held.append(signum))
           for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)  # as if it came now: KeyboardInterrupt, or the default


def _cell_label(cell) -> dict:
    c = cell.cond
    return {"key": cell.key, "task": cell.task, "seed": cell.seed, "vector": c.vector,
            "layer": c.layer, "scale": c.scale}


def _execute(cfg, plan: Plan, pending: list[Unit], on_result, quiet, model, backend,
             ray_address, workers) -> dict:
    """Run the pending units on the chosen backend; returns the worker's description."""
    total = sum(u.rows for u in pending)
    label = f"{sum(len(u.cells) for u in pending)} cells, rows"
    if backend == "ray":
        from steer.sweep.ray import run_ray

        with progress.task(label, total, quiet) as adv:
            def report(unit, status, payload):
                on_result(unit, status, payload)
                adv(unit.rows)

            return run_ray(cfg, pending, report, ray_address, workers, quiet)
    from steer.sweep.worker import Worker

    worker = Worker(cfg, plan, model, quiet)
    with progress.task(label, total, quiet) as adv:
        for unit in pending:
            on_result(unit, *worker.run_unit_safely(unit))
            adv(unit.rows)
    return worker.info()


# ---------------------------------------------------------------- after the cells


def aggregate(cfg: ExperimentConfig, plan: Plan, units: list[Unit], rd: RunDir, info: dict
              ) -> dict:
    """Rebuild samples, results, summary, plots and report from every finished cell of the plan,
    in plan order."""
    done = rd.done_keys()
    rows, records = [], []
    by_task: dict[str, list[Sample]] = {t.name: [] for t in cfg.tasks}
    for unit in units:
        for cell in unit.cells:
            if cell.key not in done:
                continue
            payload = rd.read_cell(cell.key)
            cond = Condition.from_json(payload["cond"])
            for d in payload["samples"]:
                s = Sample.from_json(d, cond)
                by_task[cell.task].append(s)
                rows.append({
                    "task": cell.task, "item": s.item, "prompt": plan.prompts[cell.task][s.item],
                    "seed": s.seed, "vector": None if cond.is_unsteered else cond.vector,
                    "layer": None if cond.is_unsteered else cond.layer, "scale": cond.scale,
                    **s.extra, "nonfinite": s.nonfinite, "metrics": s.metrics})
                # The unsteered model is reported under every vector and layer at scale 0.
                targets = ([c for c in plan.conditions if c.is_unsteered] if cond.is_unsteered
                           else [cond])
                for c in targets:
                    for name, value in s.metrics.items():
                        records.append((cell.task, s.item, c.vector, c.layer, c.scale, s.seed,
                                        name, value))
    results = pd.DataFrame.from_records(
        records, columns=["task", "item", "vector", "layer", "scale", "seed", "metric", "value"])
    rd.write_samples(rows)
    rd.write_results(results)
    stats = {"n_samples": len(rows),
             "generated_tokens": sum(int(r.get("n_tokens", 0)) for r in rows)}
    if not results.empty:
        _present(cfg, plan, rd, results, by_task, info)
    return stats


def _present(cfg, plan, rd: RunDir, results: pd.DataFrame, by_task, info: dict) -> None:
    """Summary (flagged), the checks, effects with their verdicts, the prompting baseline's
    comparison, each task's own tables, the plots and report.md."""
    from steer.results.baselines import comparison_lines, instructed_comparison
    from steer.results.competence import competence_lines, competence_table
    from steer.results.flags import collapse_lines, flag_summary
    from steer.results.plots import dose_response_plots
    from steer.results.report import report_markdown
    from steer.results.tables import effects, summarize
    from steer.sweep.calibrate import collapse_flags

    summary = summarize(results)
    # Before any effect is read: does the unsteered model do each task, and which conditions'
    # replies collapsed? Both flag the summary's rows, and a task at chance gets no verdict.
    competence = competence_table(cfg.tasks, by_task)
    at_chance = set(competence.task[competence.at_chance.astype(bool)]) if len(competence) \
        else set()
    collapse = collapse_flags(summary)
    summary = flag_summary(summary, at_chance, collapse)
    rd.write_summary(summary)
    if len(competence):
        rd.write_table("competence.csv", competence)
    if len(collapse):
        rd.write_table("collapse.csv", collapse)
    steered = [c.vector for c in plan.conditions if not c.is_prompted]
    plots = [rd.write_plot(name, fig) for name, fig in dose_response_plots(summary, steered)]
    eff = effects(results, at_chance=at_chance) if cfg.steering else pd.DataFrame()
    if not eff.empty:
        rd.write_table("effects.csv", eff)
    comparison = instructed_comparison(results) if any(c.is_prompted for c in plan.conditions) \
        else pd.DataFrame()
    emotions = list(cfg.readout.emotions or (info.get("readout_emotions") or [])[:6])
    lines: list[str] = competence_lines(competence)
    bad = collapse_lines(collapse)
    if bad:
        lines += ["", "## Collapsed conditions", "",
                  "Replies whose perplexity ratio or repetition is beyond the fluency bounds "
                  "(steer calibrate's rule); their rows carry `replies collapsed` in summary.csv's "
                  "`flags`.", ""] + [f"- {x}" for x in bad]
    if not comparison.empty:
        rd.write_table("instructed.csv", comparison)
        from steer.results.tables import headline_metrics

        shown = headline_metrics(summary, steered)
        lines += ["", "## Steering vs the prompting baseline", "",
                  "Each effect minus the unsteered model, paired by item, with 95% bootstrap CIs; "
                  "`steering vs instructed`: the CI of (steered - instructed) per item lies above "
                  "zero (larger), below (smaller) or contains it (within). All metrics in "
                  "`instructed.csv`.", ""] + comparison_lines(comparison, shown)
    for task in cfg.tasks:
        extra = task.extra(by_task[task.name], results[results.task == task.name], emotions)
        for name, frame in extra.tables.items():
            rd.write_table(name, frame)
        plots += [rd.write_plot(name, fig) for name, fig in extra.plots.items()]
        lines += extra.report
    rd.write_report(report_markdown(cfg, summary, plots, eff, lines))


# ---------------------------------------------------------------- before the cells


@dataclass
class Work:
    """What a run would do (`steer run --dry-run`, from `steer.plan_work`): cells in all, how
    many are done, and the work left.

    Example:
        >>> import steer
        >>> w = steer.plan_work(steer.load_config("configs/smoke.yaml", ["seeds=[0]"]))
        >>> w.samples, w.pending_rows, w.by_task
        (72, 72, {'stress': 9})
    """

    run_dir: str
    conditions: int
    computations: int
    seeds: int
    items: int
    samples: int
    cells: int
    done: int
    failed_before: int
    pending_cells: int
    pending_units: int
    pending_rows: int
    generated_rows: int
    max_new_tokens_total: int
    by_task: dict[str, int]
    estimated_s: float | None = None  # at the last run's pace, when there was one
    note: str | None = None  # how `steering.scales: auto` was planned


def plan_work(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> Work:
    """The plan of `cfg` against its run directory, without loading anything or writing.

    Example:
        >>> import steer
        >>> w = steer.plan_work(steer.load_config("configs/smoke.yaml"))
        >>> w.conditions, w.computations, w.cells
        (12, 9, 18)
    """
    rd = run_dir_for(cfg, run_dir)
    cfg, note = planned_config(cfg, rd.read_calibration())  # `scales: auto`, without loading
    plan = make_plan(cfg)
    units = make_units(cfg, plan)
    done, failed = rd.done_keys(), rd.failure_keys()
    cells = [c for u in units for c in u.cells]
    todo = [u for u in units if any(c.key not in done for c in u.cells)]
    g = cfg.generation
    gens = tokens = 0
    for u in todo:
        per_row, new_tokens = cfg.task(u.task).decode_work(g.max_new_tokens)
        gens += u.rows * per_row
        tokens += u.rows * per_row * new_tokens
    rate = rd.read_manifest().get("seconds_per_row")
    pending_rows = sum(u.rows for u in todo)
    return Work(
        run_dir=str(rd.path), conditions=len(plan.conditions),
        computations=len(plan.unique_conditions), seeds=len(plan.seeds),
        items=sum(len(p) for p in plan.prompts.values()), samples=plan.n_samples,
        cells=len(cells), done=sum(c.key in done for c in cells),
        failed_before=sum(c.key in failed and c.key not in done for c in cells),
        pending_cells=sum(c.key not in done for c in cells), pending_units=len(todo),
        pending_rows=pending_rows, generated_rows=gens, max_new_tokens_total=tokens,
        by_task={t.name: sum(c.key not in done for c in cells if c.task == t.name)
                 for t in cfg.tasks},
        estimated_s=round(rate * pending_rows, 1) if rate else None, note=note)
