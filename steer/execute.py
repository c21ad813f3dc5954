"""Execute units of a plan: a `Worker` holds a loaded model and its emotion vectors and turns a
`Unit` (cells of one task and seed) into one JSON-ready payload per cell.

The same Worker runs in the local process or inside a Ray actor; it never writes files (the
run directory is written by the driver alone, see runner.py).
"""

from __future__ import annotations

import importlib
import time
import traceback
from contextlib import nullcontext
from pathlib import Path

from steer.batching import BatchSizer
from steer.config import ExperimentConfig
from steer.errors import VectorError
from steer.plan import Condition, Plan, Unit, direction_name, row_seed
from steer.steering import Intervention


def cond_to_json(cond: Condition | None) -> dict | None:
    return None if cond is None else {"vector": cond.vector, "layer": cond.layer,
                                      "scale": cond.scale}


def cond_from_json(d: dict | None) -> Condition | None:
    return None if d is None else Condition(d["vector"], int(d["layer"]), float(d["scale"]))


def load_vectors(cfg: ExperimentConfig, model, quiet: bool = True):
    from steer.vectors.corpus import load_corpus
    from steer.vectors.store import vectors_for

    if cfg.vectors.file:
        from steer.vectors.export import import_safetensors

        vectors = import_safetensors(cfg.vectors.file)
        if tuple(vectors.vectors.shape[1:]) != (model.n_layers, model.d_model):
            raise VectorError(f"{cfg.vectors.file}: vectors are {tuple(vectors.vectors.shape[1:])}"
                              f" (layers, width), the model is {(model.n_layers, model.d_model)}")
        return vectors
    corpus = load_corpus(cfg.vectors.corpus, cfg.vectors.neutral)
    return vectors_for(model, corpus, cfg.vectors.token_offset, cfg.vectors.denoise_variance,
                       quiet)


class Worker:
    def __init__(self, cfg: ExperimentConfig, plan: Plan, source: str | Path, model=None,
                 quiet: bool = True):
        from steer import progress
        from steer.model import load_model

        self.cfg, self.plan, self.source = cfg, plan, source
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
        self.timings["vectors"] = time.perf_counter() - t
        self.readout_layer = (cfg.readout.layer if cfg.readout.layer is not None
                              else model.default_readout_layer)
        self.emotions = [self.vectors.names[self.vectors.index(e)]
                         for e in (cfg.readout.emotions or self.vectors.names)]
        g = cfg.generation
        longest = max(g.max_new_tokens, *(t.max_new_tokens or 0 for t in cfg.tasks))
        self.sizer = BatchSizer(g.batch_size, model, 256 + longest)

    def info(self) -> dict:
        from steer.model import describe

        return {"model": describe(self.model), "readout_layer": self.readout_layer,
                "readout_emotions": self.emotions,
                "vectors": {k: v for k, v in self.vectors.meta.items()
                            if k != "stories_per_emotion"},
                "median_resid_norm": [round(float(x), 3) for x in self.model.resid_norms()],
                "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
                "batch_size": self.sizer.record()}

    def run_unit(self, unit: Unit) -> dict:
        """{cell key: payload}, or raises. Out-of-memory errors halve the batch and retry."""
        task = next(t for t in self.cfg.tasks if t.name == unit.task)
        t = time.perf_counter()
        if task.type in ("generate", "readout"):
            by_cell = self.sizer.run(lambda bs: self._prompts(task, unit, bs))
        else:
            by_cell = self.sizer.run(lambda bs: self._items(task, unit, bs))
        elapsed = time.perf_counter() - t
        return {c.key: {"key": c.key, "task": c.task, "seed": c.seed,
                        "cond": cond_to_json(c.cond), "samples": by_cell.get(c.cond, []),
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

    # ------------------------------------------------------------------ task types

    def _items(self, task, unit: Unit, batch_size: int) -> dict:
        from steer.tasks.base import TaskContext

        ctx = TaskContext(self.model, self.vectors, self.cfg, self.plan, self.readout_layer,
                          self.emotions, quiet=True, conditions=unit.conditions,
                          seeds=[unit.seed], batch_size=batch_size)
        module = importlib.import_module(f"steer.tasks.{task.type}")
        out: dict = {}
        for o in module.execute(ctx, task, Path(self.source).parent):
            out.setdefault(o.cond, []).append({"item": o.item, "seed": o.seed,
                                               "metrics": o.metrics, "extra": o.extra})
        return out

    def _prompts(self, task, unit: Unit, batch_size: int) -> dict:
        from steer.generate import GenRow, Sampling, generate, readout_prompts, score
        from steer.metrics.text import repetition, sentiment

        cfg, model, g = self.cfg, self.model, self.cfg.generation
        prompts = self.plan.prompts[task.name]
        keys, rows, skip = [], [], []
        for item, prompt in enumerate(prompts):
            text = model.format_prompt(prompt, g.system_prompt)
            for cond in unit.conditions:
                ivs = () if cond is None else (Intervention(
                    direction_name(cond, unit.seed), cond.layer, cond.scale,
                    cfg.steering.positions),)
                keys.append((item, cond))
                rows.append(GenRow(text, ivs, row_seed(task.name, item, unit.seed)))
                if task.type == "readout":
                    skip.append(model.user_offset(prompt, g.system_prompt))
        out: dict = {}
        if task.type == "readout":
            reads = readout_prompts(model, rows, skip, self.vectors, self.readout_layer,
                                    self.emotions, batch_size)
            values = task.values if task.values else None
            for (item, cond), ro in zip(keys, reads):
                extra = {"value": values[item]} if values else {}
                out.setdefault(cond, []).append({
                    "item": item, "seed": unit.seed, "extra": extra,
                    "metrics": {f"readout.{e}": v for e, v in ro.items()}})
            return out
        gens = generate(model, rows, self.vectors,
                        Sampling(g.max_new_tokens, g.temperature, g.top_p), batch_size)
        scores = [None] * len(gens)
        if {"readout", "perplexity"} & set(cfg.metrics):
            scores = score(model, [(x.prompt_ids, x.ids) for x in gens], self.vectors,
                           self.readout_layer,
                           self.emotions if "readout" in cfg.metrics else (), batch_size)
        for (item, cond), gen, sc in zip(keys, gens, scores):
            metrics: dict[str, float] = {}
            if "readout" in cfg.metrics and sc is not None:
                metrics.update({f"readout.{e}": v for e, v in sc.readout.items()})
            if "sentiment" in cfg.metrics:
                metrics["sentiment"] = sentiment(gen.text)
            if "perplexity" in cfg.metrics and sc is not None:
                metrics["perplexity"] = sc.perplexity
            if "repetition" in cfg.metrics:
                metrics["repetition"] = repetition(gen.ids)
            out.setdefault(cond, []).append({
                "item": item, "seed": unit.seed, "metrics": metrics,
                "extra": {"text": gen.text, "n_tokens": len(gen.ids), "stopped": gen.stopped}})
        return out
