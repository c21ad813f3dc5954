"""Execute units of a plan: a `Worker` holds a loaded model and its emotion vectors and turns a
`Unit` (cells of one task and seed) into one JSON-ready payload per cell, by calling the task's
own `run`.

The same Worker runs in the local process or inside a Ray actor; it never writes files (the
run directory is written by the driver alone, see run.py and rundir.py).
"""

from __future__ import annotations

import time
import traceback
from contextlib import nullcontext

from steer.lm.batching import BatchSizer
from steer.lm.decode import Sampling
from steer.sweep.config import ExperimentConfig
from steer.sweep.plan import Plan, Unit
from steer.tasks.base import Context


def load_vectors(cfg: ExperimentConfig, model, quiet: bool = True):
    """The config's emotion vectors for `model` (built, cached, or read from `vectors.file`)."""
    from steer.vectors.store import emotion_vectors

    v = cfg.vectors
    return emotion_vectors(model, v.corpus, v.neutral, file=v.file, token_offset=v.token_offset,
                           denoise_variance=v.denoise_variance, quiet=quiet)


class Worker:
    def __init__(self, cfg: ExperimentConfig, plan: Plan, model=None, quiet: bool = True):
        from steer import progress
        from steer.lm.load import load_model

        self.cfg, self.plan = cfg, plan
        self.timings: dict[str, float] = {}
        t = time.perf_counter()
        if model is None:
            label = f"loading {cfg.model.name}"
            spinner = not quiet and progress.console.is_terminal
            if not quiet and not spinner:
                progress.console.print(label, highlight=False)
            with progress.console.status(label, spinner="dots") if spinner else nullcontext():
                model = load_model(cfg.model.name, cfg.model.device, cfg.model.dtype)
        if cfg.generation.decode != "auto":
            model.decode = cfg.generation.decode
        self.model = model
        self.timings["load_model"] = time.perf_counter() - t
        t = time.perf_counter()
        self.vectors = load_vectors(cfg, model, quiet)
        model.resid_norms()
        if cfg.steering is not None:  # a zero direction is bad input: say so once, not per cell
            from steer.lm.directions import check_directions

            check_directions(cfg.steering.vectors, self.vectors, cfg.steering.layers,
                             model.d_model)
        self.timings["vectors"] = time.perf_counter() - t
        self.readout_layer = (cfg.readout.layer if cfg.readout.layer is not None
                              else model.default_readout_layer)
        self.emotions = [self.vectors.names[self.vectors.index(e)]
                         for e in (cfg.readout.emotions or self.vectors.names)]
        g = cfg.generation
        longest = max(g.max_new_tokens, *(t.decode_work(g.max_new_tokens)[1] for t in cfg.tasks))
        self.sizer = BatchSizer(g.batch_size, model, 256 + longest)

    def context(self, batch_size: int) -> Context:
        g, cfg = self.cfg.generation, self.cfg
        return Context(self.model, self.vectors, self.readout_layer, self.emotions,
                       Sampling(g.max_new_tokens, g.temperature, g.top_p), g.system_prompt,
                       cfg.steering.positions if cfg.steering else "all", tuple(cfg.metrics),
                       self.plan.seeds[0], batch_size, quiet=True)

    def info(self) -> dict:
        return {"model": self.model.describe(), "readout_layer": self.readout_layer,
                "readout_emotions": self.emotions,
                "vectors": {k: v for k, v in self.vectors.meta.items()
                            if k != "stories_per_emotion"},
                "median_resid_norm": [round(float(x), 3) for x in self.model.resid_norms()],
                "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
                "batch_size": self.sizer.record()}

    def run_unit(self, unit: Unit) -> dict:
        """{cell key: payload}, or raises. Out-of-memory errors halve the batch and retry."""
        task = self.cfg.task(unit.task)
        t = time.perf_counter()
        samples = self.sizer.run(lambda bs: task.run(self.context(bs), unit.conditions,
                                                     unit.seed))
        elapsed = time.perf_counter() - t
        by_cell: dict = {}
        for s in samples:
            by_cell.setdefault(s.cond, []).append(s.to_json())
        return {c.key: {"key": c.key, "task": c.task, "seed": c.seed,
                        "cond": c.cond.to_json(), "samples": by_cell.get(c.cond, []),
                        "elapsed_s": round(elapsed / len(unit.cells), 4)}
                for c in unit.cells}

    def run_unit_safely(self, unit: Unit) -> tuple[str, dict]:
        """("ok", payloads) or ("error", {"error", "traceback"}): a failed unit never stops the
        worker."""
        try:
            return "ok", self.run_unit(unit)
        except Exception as e:  # recorded per cell by the driver
            return "error", {"error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc()}
