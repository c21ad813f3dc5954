"""Calibrating a steering strength: the layer and scale at which steered text stays fluent.

Every replication first hunts for a strength at which the model still writes: on SmolLM2-135M
0.125-0.25 of the median residual norm stays fluent, 0.4 and more falls into repetition, 1.0
breaks the text. `calibrate` measures it instead. At each candidate layer and scale (both
signs), the model replies to a small fixed prompt set under each steering vector, under random
directions of the same norm, and unsteered, all through the generate task's own machinery (so
one batch holds many conditions and every reply is re-read by the unsteered model). Per
condition it measures, against the unsteered model:

- `ppl_ratio`: mean perplexity of the replies (re-read unsteered) / that of unsteered replies;
- `repetition`: mean share of repeated token 3-grams (steer.tasks.metrics.repetition);
- `readout_shift_per_unit`: (mean read-out of the steered emotion in the replies - unsteered)
  / scale. The read-out of an expression is its terms' read-outs with their coefficients
  (`desperate - calm`: readout.desperate - readout.calm).

The fluency rule is `fluency` below, the one definition of it (summary tables use it through
`collapse_flags`). The recommendation is, per layer, the largest fluent scale s: every grid
scale with |scale| <= s is fluent for every vector there, both signs, the random controls
included (a norm at which random directions already break the text is not a usable strength,
whatever the steered vector does). Among layers, the one whose vectors move their read-out most
while fluent (read-out slope x s) is recommended. Same inputs, same table: seeds are fixed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pandas as pd

from steer.data import data_path
from steer.errors import InputError
from steer.io import read_jsonl
from steer.tasks.base import UNSTEERED, Condition

DEFAULT_SCALES = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)  # candidate magnitudes, both signs tried
DEFAULT_PROMPTS = 8
MAX_PPL_RATIO = 1.5
# Repetition is a share in [0, 1]. In a 32-token reply one repeated 3-gram is 1/30 = 0.033, and
# the mean over 8 sampled replies moves by about that much from seed to seed; a loop scores
# 0.3-0.9. So 0.05 forgives a stray repeat or two per reply, never a loop.
REPETITION_SLACK = 0.05
RULE = (f"fluent: perplexity ratio (replies re-read by the unsteered model, steered / unsteered) "
        f"<= {MAX_PPL_RATIO}, and mean repetition (share of repeated 3-grams) <= the reference's "
        f"+ {REPETITION_SLACK}; the reference is the random directions of the same norm at the "
        "same layer and scale for a steering vector, and the unsteered model for the random "
        "controls themselves and for instructed (prompt:) conditions; any non-finite reply is "
        "not fluent")
FORMAT = 1  # bump when what a calibration computes changes: cached calibrations are redone


def fluency(ppl_ratio: float, repetition: float, reference_repetition: float,
            nonfinite: int = 0) -> tuple[bool, str]:
    """The fluency rule (RULE): whether a condition is fluent, and why not ("" when it is).

    Example:
        >>> fluency(1.2, 0.04, 0.02)
        (True, '')
        >>> fluency(1.8, 0.40, 0.05)
        (False, 'perplexity x1.80 > 1.5; repetition 0.400 > 0.050 + 0.05')
        >>> fluency(1.0, 0.0, 0.0, nonfinite=2)
        (False, '2 non-finite replies')
    """
    if nonfinite:
        return False, f"{nonfinite} non-finite replies"
    why = []
    if not ppl_ratio <= MAX_PPL_RATIO:  # NaN fails too
        why.append(f"perplexity x{ppl_ratio:.2f} > {MAX_PPL_RATIO}")
    if not repetition <= reference_repetition + REPETITION_SLACK:
        why.append(f"repetition {repetition:.3f} > {reference_repetition:.3f} + "
                   f"{REPETITION_SLACK}")
    return not why, "; ".join(why)


def is_random(vector: str) -> bool:
    """Random controls: `random-K`, or `random`, their pooled row in a summary.

    Example:
        >>> [is_random(v) for v in ("random-3", "random", "desperate", "prompt:calm")]
        [True, True, False, False]
    """
    return vector == "random" or vector.startswith("random-")


def calibration_prompts(n: int = DEFAULT_PROMPTS) -> list[str]:
    """The first `n` of the built-in calibration prompts (steer/data/prompts/calibration.jsonl:
    everyday requests mixed with stressful ones).

    Example:
        >>> len(calibration_prompts()), calibration_prompts(1)[0][:12]
        (8, 'My code is d')
    """
    prompts = [row["prompt"] for _, row in read_jsonl(
        data_path("prompts", "calibration.jsonl"), "calibration prompts")]
    if not 1 <= n <= len(prompts):
        raise InputError(f"--prompts: got {n}, expected 1 to {len(prompts)} (the built-in "
                         "calibration prompts)")
    return prompts[:n]


def _judge(conds: pd.DataFrame, unsteered_rep: float) -> pd.DataFrame:
    """Add random_repetition, compared_with, fluent and reason to per-condition means (vector,
    layer, scale, ppl_ratio, repetition, n_nonfinite), the rule applied to each row."""
    rnd = conds[conds.vector.map(is_random)]
    pooled = rnd[rnd.vector == "random"]  # a summary's pooled control, when there is one
    rnd = pooled if not pooled.empty else rnd
    random_rep = rnd.groupby(["layer", "scale"])["repetition"].mean()
    out = []
    for row in conds.itertuples(index=False):
        rr = random_rep.get((row.layer, row.scale), math.nan)
        vs_random = not (is_random(row.vector) or row.vector.startswith("prompt:")
                         or math.isnan(rr) or row.scale == 0)
        ok, why = fluency(row.ppl_ratio, row.repetition, rr if vs_random else unsteered_rep,
                          int(getattr(row, "n_nonfinite", 0) or 0))
        out.append((rr, "random" if vs_random else "unsteered", ok, why))
    cols = ["random_repetition", "compared_with", "fluent", "reason"]
    return conds.assign(**{c: [o[i] for o in out] for i, c in enumerate(cols)})


def collapse_flags(summary: pd.DataFrame) -> pd.DataFrame:
    """Which conditions of a run collapsed, by the fluency rule: one row per (task, vector,
    layer, scale) of the tasks with both `perplexity` and `repetition` in a summary table
    (steer.results.tables.summarize), with ppl_ratio (against the same task's unsteered
    model: its rows at scale 0), repetition, random_repetition (the pooled `random` control
    at the same layer and scale, else the mean of the `random-K` rows), compared_with,
    collapsed and reason. Instructed (`prompt:`) conditions and the random controls are
    compared with the unsteered model.

    Example:
        >>> import pandas as pd
        >>> rows = [("calm", 2, 0.0, 10.0, 0.02), ("calm", 2, 0.4, 30.0, 0.50),
        ...         ("random-0", 2, 0.0, 10.0, 0.02), ("random-0", 2, 0.4, 11.0, 0.03)]
        >>> summary = pd.DataFrame([dict(task="t", vector=v, layer=L, scale=s, metric=m,
        ...                              mean=x, ci_low=x, ci_high=x, n=8)
        ...                         for v, L, s, p, r in rows
        ...                         for m, x in (("perplexity", p), ("repetition", r))])
        >>> f = collapse_flags(summary)
        >>> f[["vector", "scale", "ppl_ratio", "collapsed"]].values.tolist()
        [['calm', 0.0, 1.0, False], ['calm', 0.4, 3.0, True], ['random-0', 0.0, 1.0, False], \
['random-0', 0.4, 1.1, False]]
    """
    cols = ["task", "vector", "layer", "scale", "ppl_ratio", "repetition", "random_repetition",
            "compared_with", "collapsed", "reason"]
    keys = ["task", "vector", "layer", "scale"]
    sub = summary[summary.metric.isin(["perplexity", "repetition"])]
    if sub.empty:
        return pd.DataFrame(columns=cols)
    # only the conditions there are (a pivot would make every combination of its keys), and
    # a NaN mean (no finite value at all) kept
    wide = sub.groupby(keys + ["metric"], sort=True)["mean"].first().unstack("metric")
    wide = wide.reset_index().rename_axis(columns=None)
    if "n_nonfinite" in sub:
        nf = sub.groupby(keys)["n_nonfinite"].max().reset_index()
        wide = wide.merge(nf, on=keys, how="left")
    frames = []
    for _, g in wide.groupby("task", sort=True):
        if not {"perplexity", "repetition"} <= set(g.columns) or g.perplexity.isna().all():
            continue
        base = g[(g.scale == 0) & ~g.vector.str.startswith("prompt:")]
        ppl0, rep0 = base.perplexity.mean(), base.repetition.mean()
        g = g.assign(ppl_ratio=g.perplexity / ppl0)
        frames.append(_judge(g, rep0))
    if not frames:
        return pd.DataFrame(columns=cols)
    out = pd.concat(frames, ignore_index=True)
    return out.assign(collapsed=~out.fluent.astype(bool))[cols]


# ---------------------------------------------------------------- calibrating


@dataclass
class Calibration:
    """What `calibrate` returns: `table` (one row per layer, signed scale and vector: ppl_ratio,
    repetition, random_repetition, readout_shift_per_unit, fluent, reason...), the
    `recommendation` (a dict: layer, scale, the rule, read-out shifts per unit), the `grid`
    scanned, the unsteered model's means, and the seconds it took.

    Example:
        >>> import pandas as pd
        >>> cal = Calibration(pd.DataFrame(), {"layer": 2, "scale": 0.2}, {"layers": [2]},
        ...                   {"perplexity": 9.5, "repetition": 0.01}, seconds=3.14159)
        >>> d = cal.to_json()
        >>> d["recommendation"]["scale"], d["seconds"], d["rule"][:6]
        (0.2, 3.14, 'fluent')
    """

    table: pd.DataFrame
    recommendation: dict
    grid: dict
    unsteered: dict
    seconds: float
    key: str | None = None  # what it depends on, hashed (set when made from a config)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """calibration.json: recommendation, grid, rule, unsteered means, seconds, key (NaN
        and inf as null)."""
        return plain({"format": FORMAT, "key": self.key, "recommendation": self.recommendation,
                "grid": self.grid, "rule": RULE, "unsteered": self.unsteered,
                "seconds": round(self.seconds, 2)})


def plain(obj):
    """`obj` with NaN and inf replaced by None (calibration.json stays strict JSON).

    Example:
        >>> plain({"a": [1.0, float("nan")], "b": float("inf"), "c": "x"})
        {'a': [1.0, None], 'b': None, 'c': 'x'}
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    return obj


def _check_grid(model, steer, layers, scales) -> tuple[list[str], list[int], list[float]]:
    steer = [steer] if isinstance(steer, str) else list(steer)
    if not steer:
        raise InputError("steer: got nothing, expected at least one vector expression")
    layers = list(dict.fromkeys(int(x) for x in layers))
    bad = [x for x in layers if not 0 <= x < model.n_layers]
    if not layers or bad:
        raise InputError(f"--layers: got {bad or layers}, expected layers in 0.."
                         f"{model.n_layers - 1} ({model.name} has {model.n_layers})")
    scales = sorted({float(abs(s)) for s in scales})
    if not scales or not all(0 < s <= 10 for s in scales):
        raise InputError(f"--scales: got {scales}, expected magnitudes in (0, 10] (fractions of "
                         "the median residual norm; both signs are tried)")
    return steer, layers, scales


def _readout_terms(vectors, steer: list[str]) -> dict[str, list[tuple[float, str]]]:
    """Each steering expression's read-out: its terms (coefficient, emotion), names canonical."""
    from steer.lm.directions import parse_expression

    return {v: [(c, vectors.names[vectors.index(n)]) for c, n in parse_expression(v)]
            for v in steer}


def calibrate(model, vectors, *, steer=("desperate",), layers, scales=DEFAULT_SCALES,
              prompts: list[str] | None = None, readout_layer: int | None = None,
              max_new_tokens: int = 32, temperature: float = 0.7, top_p: float = 0.95,
              system_prompt: str | None = None, positions: str = "all", seed: int = 0,
              random_controls: int = 1, batch_size: int = 32, quiet: bool = True
              ) -> Calibration:
    """Measure fluency and read-out shift at every candidate layer x scale (both signs) for the
    vector expressions `steer` and `random_controls` random directions of the same norm, on
    `prompts` (default: the first 8 built-in calibration prompts); recommend a layer and the
    largest fluent scale there (see the module docstring).

    Example:
        >>> import steer
        >>> from steer.sweep.calibrate import calibrate
        >>> m = steer.load_model("tiny-random")
        >>> ev = steer.emotion_vectors(m, quiet=True)
        >>> cal = calibrate(m, ev, steer=["desperate"], layers=[2], scales=[0.1, 0.5],
        ...                 prompts=["Hi.", "The tests fail."], max_new_tokens=6,
        ...                 temperature=0)
        >>> len(cal.table), sorted(set(cal.table.scale)), cal.recommendation["layer"] in (2, None)
        (8, [-0.5, -0.1, 0.1, 0.5], True)
    """
    from steer import progress
    from steer.lm.decode import Sampling
    from steer.lm.directions import check_directions
    from steer.tasks.base import Context
    from steer.tasks.generate import GenerateSpec

    t0 = time.perf_counter()
    steer, layers, scales = _check_grid(model, steer, layers, scales)
    check_directions(steer, vectors, layers, model.d_model)
    prompts = list(prompts) if prompts is not None else calibration_prompts()
    readout_layer = model.default_readout_layer if readout_layer is None else readout_layer
    terms = _readout_terms(vectors, steer)
    emotions = list(dict.fromkeys(n for ts in terms.values() for _, n in ts))
    names = steer + [f"random-{k}" for k in range(random_controls)]
    conds = [UNSTEERED] + [Condition(v, layer, sign * s) for layer in layers for s in scales
                           for sign in (-1.0, 1.0) for v in names]
    ctx = Context(model, vectors, readout_layer, emotions,
                  Sampling(max_new_tokens, temperature, top_p), system_prompt, positions,
                  ("readout", "perplexity", "repetition"), seed, batch_size, quiet=True)
    task = GenerateSpec(name="calibration", prompts=prompts)
    # Conditions go in chunks of a few batches (a progress step each); chunking depends only
    # on the inputs, so the same inputs give the same batches and the same table.
    per = max(1, batch_size // len(prompts))
    chunk = per * max(1, math.ceil(len(conds) / 20 / per))
    samples = []
    with progress.task("calibrating: replies", len(conds) * len(prompts), quiet) as advance:
        for i in range(0, len(conds), chunk):
            samples += task.run(ctx, conds[i:i + chunk], seed)
            advance(len(conds[i:i + chunk]) * len(prompts))
    means = _means(samples, terms)
    key = (UNSTEERED.vector, UNSTEERED.layer, UNSTEERED.scale)
    base = means.loc[key]
    steered = means.drop(index=[key]).reset_index()
    steered = steered.assign(ppl_ratio=steered.perplexity / base.perplexity)
    table = _judge(steered, float(base.repetition))
    shift = [(r[f"ro:{r.vector}"] - base[f"ro:{r.vector}"]) / r.scale
             if not is_random(r.vector) else math.nan for _, r in table.iterrows()]
    table = table.assign(readout_shift_per_unit=shift)
    columns = ["layer", "scale", "vector", "perplexity", "ppl_ratio", "repetition",
               "random_repetition", "compared_with", "readout_shift_per_unit", "fluent",
               "reason", "n_nonfinite"]
    ro = table[[c for c in table.columns if c.startswith("ro:")] + ["vector", "layer", "scale"]]
    table = table[columns]
    rec = recommend(table)
    if rec["layer"] is not None and random_controls:
        rec["random_readout_shift_per_unit"] = _random_shift(ro, base, rec, steer)
    rec["readout_layer"] = readout_layer
    grid = {"vectors": steer, "layers": layers, "scales": scales, "prompts": prompts,
            "random_controls": random_controls, "readout_layer": readout_layer,
            "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
            "system_prompt": system_prompt, "positions": positions, "seed": seed,
            "model": model.name, "fingerprint": model.fingerprint}
    unsteered = {"perplexity": float(base.perplexity), "repetition": float(base.repetition)}
    return Calibration(table, rec, grid, unsteered, time.perf_counter() - t0)


def _means(samples, terms: dict[str, list[tuple[float, str]]]) -> pd.DataFrame:
    """Per condition (vector, layer, scale): mean perplexity and repetition over the finite
    replies (a non-finite one has NaN metrics), how many were non-finite, and `ro:<vector>`,
    the mean read-out of every steering expression."""
    rows = []
    for s in samples:
        m = s.metrics
        row = {"vector": s.cond.vector, "layer": s.cond.layer, "scale": s.cond.scale,
               "perplexity": m.get("perplexity", math.nan),
               "repetition": m.get("repetition", math.nan), "n_nonfinite": int(s.nonfinite)}
        for v, ts in terms.items():
            row[f"ro:{v}"] = sum(c * m.get(f"readout.{n}", math.nan) for c, n in ts)
        rows.append(row)
    grouped = pd.DataFrame(rows).groupby(["vector", "layer", "scale"], sort=False)
    return grouped.mean().assign(n_nonfinite=grouped["n_nonfinite"].sum())


def _slope(scales, shifts) -> float:
    """Least-squares slope through the origin of read-out shift against scale."""
    pairs = [(s, d) for s, d in zip(scales, shifts) if math.isfinite(d)]
    den = sum(s * s for s, _ in pairs)
    return sum(s * d for s, d in pairs) / den if den else math.nan


def recommend(table: pd.DataFrame) -> dict:
    """The recommendation from a calibration table: per layer the largest fluent scale s (every
    grid scale with |scale| <= s fluent for every vector, random controls included, both
    signs; 0 when the smallest is not), the read-out shift per unit of scale there (a
    least-squares slope over the scales up to s), and the layer whose vectors reach the largest
    read-out shift while fluent (slope x s; ties: the larger s, then the earlier layer).

    Example:
        >>> import pandas as pd
        >>> rows = [(L, sign * s, "calm", s <= limit) for L, limit in ((8, 0.1), (12, 0.2))
        ...         for s in (0.1, 0.2, 0.4) for sign in (-1, 1)]
        >>> t = pd.DataFrame(rows, columns=["layer", "scale", "vector", "fluent"])
        >>> t["readout_shift_per_unit"] = 0.5
        >>> r = recommend(t)
        >>> r["layer"], r["scale"], r["readout_shift_per_unit"], r["at_grid_edge"]
        (12, 0.2, {'calm': 0.5}, False)
    """
    mags = sorted({abs(float(s)) for s in table.scale})
    steer = [v for v in dict.fromkeys(table.vector) if not is_random(v)]
    by_layer = []
    for layer, g in table.groupby("layer", sort=True):
        largest = 0.0
        for s in mags:
            if not g[g.scale.abs() == s].fluent.astype(bool).all():
                break
            largest = s
        ok = g[g.scale.abs() <= largest]
        slopes = {v: _slope(ok[ok.vector == v].scale, ok[ok.vector == v].readout_shift_per_unit
                            * ok[ok.vector == v].scale) for v in steer} if largest else {}
        reach = [slopes[v] * largest for v in steer if math.isfinite(slopes.get(v, math.nan))]
        by_layer.append({"layer": int(layer), "largest_fluent_scale": largest,
                         "readout_shift_per_unit": slopes,
                         "readout_shift_reached": sum(reach) / len(reach) if reach else None})
    usable = [b for b in by_layer if b["largest_fluent_scale"] > 0]
    rec = {"layer": None, "scale": None, "rule": RULE, "by_layer": by_layer,
           "readout_shift_per_unit": {}, "at_grid_edge": False}
    if not usable:
        rec["note"] = (f"no candidate scale is fluent at any layer (the smallest, {mags[0]:g}, "
                       "already fails): try smaller scales")
        return rec
    best = max(usable, key=lambda b: (b["readout_shift_reached"] if b["readout_shift_reached"]
                                      is not None else -math.inf, b["largest_fluent_scale"],
                                      -b["layer"]))
    s = best["largest_fluent_scale"]
    rec.update(layer=best["layer"], scale=s, readout_shift_per_unit=best["readout_shift_per_unit"],
               at_grid_edge=s == mags[-1])
    if s == mags[-1]:
        rec["note"] = "the largest candidate is still fluent: a larger scale may be too"
    return rec


def _random_shift(ro: pd.DataFrame, base, rec: dict, steer: list[str]) -> dict[str, float]:
    """Each steering vector's read-out slope under the random controls, at the recommended
    layer and over the same scales: what the norm alone does to that read-out."""
    g = ro[ro.vector.map(is_random) & (ro.layer == rec["layer"])
           & (ro.scale.abs() <= rec["scale"])]
    return {v: _slope(g.scale, g[f"ro:{v}"] - base[f"ro:{v}"]) for v in steer}

