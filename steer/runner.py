"""Plan and execute an experiment: conditions x items x seeds, batched, then scored and written.

A condition is (vector, layer, scale). Every condition at scale 0 is the unsteered model, so it is
computed once per (task, item, seed) and reported under each vector at scale 0. Sampling uses
one RNG stream per (task, item, seed), shared by all conditions (common random numbers): the
differences between conditions then come from steering, not from sampling luck.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from steer import progress
from steer.config import ExperimentConfig, to_yaml
from steer.errors import VectorError
from steer.generate import GenRow, Sampling, generate, readout_prompts, score
from steer.metrics.stats import bootstrap_ci
from steer.metrics.text import repetition, sentiment
from steer.plan import direction_name, make_plan, row_seed
from steer.runs import RunDir
from steer.steering import Intervention


def summarize(results: pd.DataFrame, n_boot: int = 2000) -> pd.DataFrame:
    """One row per (task, vector, layer, scale, metric): mean and a 95% bootstrap CI.

    Seeds of one item are averaged first and items are resampled (a cluster bootstrap), since
    samples of the same prompt are not independent. Random directions are also pooled as
    vector `random` when there are several."""
    frames = [results]
    rnd = results[results.vector.str.startswith("random-")]
    if rnd.vector.nunique() > 1:
        frames.append(rnd.assign(vector="random"))
    df = pd.concat(frames, ignore_index=True).dropna(subset=["value"])
    rows = []
    keys = ["task", "vector", "layer", "scale", "metric"]
    for key, g in df.groupby(keys, sort=True):
        per_item = g.groupby(["item", "vector"] if key[1] == "random" else "item")["value"].mean()
        mean, lo, hi = bootstrap_ci(per_item.to_numpy(), n_boot=n_boot)
        rows.append(dict(zip(keys, key), mean=g["value"].mean(), ci_low=lo, ci_high=hi, n=len(g)))
    return pd.DataFrame(rows)


def run_experiment(cfg: ExperimentConfig, source: str | Path, quiet: bool = False,
                   model=None) -> RunDir:
    """Run `cfg` into a new run directory. If anything fails, the directory keeps the resolved
    config and a manifest that says where and why (status "failed"), and the error propagates."""
    plan = make_plan(cfg, source)
    run = RunDir.create(cfg.output_dir, cfg.name)
    run.write_config(to_yaml(cfg))
    try:
        _execute(cfg, source, plan, run, quiet, model)
    except BaseException as e:
        import traceback

        run.write_manifest({"name": cfg.name, "config_source": str(source), "status": "failed",
                            "error": f"{type(e).__name__}: {e}",
                            "traceback": traceback.format_exc()})
        raise
    return run


def _execute(cfg: ExperimentConfig, source, plan, run: RunDir, quiet: bool, model) -> None:
    from steer.model import describe, load_model
    from steer.vectors.corpus import load_corpus
    from steer.vectors.store import vectors_for

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if model is None:
        if not quiet and not progress.console.is_terminal:
            progress.console.print(f"loading {cfg.model.name}", highlight=False)
        with progress.console.status(f"loading {cfg.model.name}", spinner="dots"):
            model = load_model(cfg.model.name, cfg.model.device, cfg.model.dtype)
    timings["load_model"] = time.perf_counter() - t0

    t = time.perf_counter()
    if cfg.vectors.file:
        from steer.vectors.export import import_safetensors

        vectors = import_safetensors(cfg.vectors.file)
        if tuple(vectors.vectors.shape[1:]) != (model.n_layers, model.d_model):
            raise VectorError(f"{cfg.vectors.file}: vectors are {tuple(vectors.vectors.shape[1:])}"
                              f" (layers, width), the model is {(model.n_layers, model.d_model)}")
    else:
        corpus = load_corpus(cfg.vectors.corpus, cfg.vectors.neutral)
        vectors = vectors_for(model, corpus, cfg.vectors.token_offset,
                              cfg.vectors.denoise_variance, quiet)
    model.resid_norms()
    timings["vectors"] = time.perf_counter() - t

    readout_layer = (cfg.readout.layer if cfg.readout.layer is not None
                     else model.default_readout_layer)
    emotions = [vectors.names[vectors.index(e)] for e in (cfg.readout.emotions or vectors.names)]
    g = cfg.generation

    # One row per (task, item, seed, distinct condition).
    kinds = {t.name: t.type for t in cfg.tasks}
    keys, rows, rkeys, rrows, rskip = [], [], [], [], []
    for task_name, prompts in plan.prompts.items():
        if kinds[task_name] not in ("generate", "readout"):
            continue
        is_readout = kinds[task_name] == "readout"
        for item, prompt in enumerate(prompts):
            text = model.format_prompt(prompt, g.system_prompt)
            # read-out tasks are deterministic: one seed is enough
            for seed in plan.seeds[:1] if is_readout else plan.seeds:
                for cond in plan.unique_conditions:
                    ivs = () if cond is None else (Intervention(
                        direction_name(cond, seed), cond.layer, cond.scale,
                        cfg.steering.positions),)
                    row = GenRow(text, ivs, row_seed(task_name, item, seed))
                    if is_readout:
                        rkeys.append((task_name, item, seed, cond))
                        rrows.append(row)
                        rskip.append(model.user_offset(prompt, g.system_prompt))
                    else:
                        keys.append((task_name, item, seed, cond))
                        rows.append(row)

    t = time.perf_counter()
    sampling = Sampling(g.max_new_tokens, g.temperature, g.top_p)
    gens = []
    if rows:
        with progress.task("generate", len(rows), quiet) as adv:
            gens = generate(model, rows, vectors, sampling, g.batch_size, adv)
    timings["generate"] = time.perf_counter() - t
    n_tokens = sum(len(x.ids) for x in gens)

    t = time.perf_counter()
    scores = [None] * len(gens)
    if gens and {"readout", "perplexity"} & set(cfg.metrics):
        with progress.task("score", len(gens), quiet) as adv:
            scores = score(model, [(x.prompt_ids, x.ids) for x in gens], vectors, readout_layer,
                           emotions if "readout" in cfg.metrics else (), g.batch_size, adv)
    read = []
    if rrows:
        with progress.task("read", len(rrows), quiet) as adv:
            read = readout_prompts(model, rrows, rskip, vectors, readout_layer, emotions,
                                   g.batch_size, adv)
    timings["score"] = time.perf_counter() - t

    from steer.tasks.base import TaskContext

    ctx = TaskContext(model, vectors, cfg, plan, readout_layer, emotions, quiet)
    item_outcomes = []
    for task in cfg.tasks:
        if task.type in ("choice", "preference", "code"):
            import importlib

            t = time.perf_counter()
            module = importlib.import_module(f"steer.tasks.{task.type}")
            item_outcomes.append((task.name, module.execute(ctx, task, Path(source).parent)))
            timings[f"task.{task.name}"] = time.perf_counter() - t

    samples, records = [], []

    def record(task_name, item, seed, cond, metrics, extra):
        samples.append({
            "task": task_name, "item": item, "prompt": plan.prompts[task_name][item],
            "seed": seed, "vector": None if cond is None else cond.vector,
            "layer": None if cond is None else cond.layer,
            "scale": 0.0 if cond is None else cond.scale, **extra, "metrics": metrics,
        })
        # The shared baseline is reported under every vector and layer at scale 0.
        targets = ([c for c in plan.conditions if c.is_baseline] if cond is None else [cond])
        for c in targets:
            for name, value in metrics.items():
                records.append((task_name, item, c.vector, c.layer, c.scale, seed, name, value))

    for (task_name, item, seed, cond), gen, sc in zip(keys, gens, scores):
        metrics: dict[str, float] = {}
        if "readout" in cfg.metrics and sc is not None:
            metrics.update({f"readout.{e}": v for e, v in sc.readout.items()})
        if "sentiment" in cfg.metrics:
            metrics["sentiment"] = sentiment(gen.text)
        if "perplexity" in cfg.metrics and sc is not None:
            metrics["perplexity"] = sc.perplexity
        if "repetition" in cfg.metrics:
            metrics["repetition"] = repetition(gen.ids)
        record(task_name, item, seed, cond, metrics,
               {"text": gen.text, "n_tokens": len(gen.ids), "stopped": gen.stopped})
    values = {t.name: t.values for t in cfg.tasks if t.values}
    for (task_name, item, seed, cond), ro in zip(rkeys, read):
        extra = {"value": values[task_name][item]} if task_name in values else {}
        record(task_name, item, seed, cond, {f"readout.{e}": v for e, v in ro.items()}, extra)

    for task_name, outcomes in item_outcomes:
        for o in outcomes:
            record(task_name, o.item, o.seed, o.cond, o.metrics, o.extra)

    results = pd.DataFrame.from_records(
        records, columns=["task", "item", "vector", "layer", "scale", "seed", "metric", "value"])
    summary = summarize(results)
    run.write_samples(samples)
    run.write_results(results)
    run.write_summary(summary)

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
        plots += value_plots(results, values, list(cfg.readout.emotions or emotions[:6]),
                             run.plots)
        trend_by_value = value_trends(results, values)
    eff = effects(results) if cfg.steering else pd.DataFrame()
    if not eff.empty:
        run.write_table("effects.csv", eff)
    extra: list[str] = []
    for task_name, outcomes in item_outcomes:
        if kinds[task_name] == "preference":
            from steer.tasks.preference import write_tables

            extra += write_tables(run, task_name, outcomes, results, plan, cfg)
    run.write_report(report_markdown(cfg, summary, plots, trend_by_value, eff, extra))
    timings["total"] = time.perf_counter() - t0
    run.write_manifest({
        "name": cfg.name, "config_source": str(source), "status": "complete",
        "model": describe(model),
        "seeds": plan.seeds, "readout_layer": readout_layer, "readout_emotions": emotions,
        "vectors": {k: v for k, v in vectors.meta.items() if k != "stories_per_emotion"},
        "median_resid_norm": [round(float(x), 3) for x in model.resid_norms()],
        "n_conditions": len(plan.conditions), "n_samples": len(samples),
        "generated_tokens": n_tokens,
        "generate_tokens_per_s": round(n_tokens / max(timings["generate"], 1e-9), 1),
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    })
