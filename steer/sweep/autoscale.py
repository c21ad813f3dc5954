"""Calibrating from a config: `steer calibrate CONFIG` and `steering.scales: auto`.

`steer calibrate` locks the config's run directory, calibrates its steering vectors at its
layers (sweep/calibrate.py) and writes `calibration/` there. A config with `scales: auto` is
calibrated the same way when its run starts, before any cell is planned, and runs
[-s, -s/2, 0, s/2, s]; the calibration.json it writes is keyed by everything the calibration
depends on, so a resumed run reads it back and plans the same cells.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

from steer.errors import ConfigError, InputError
from steer.sweep.calibrate import (
    DEFAULT_PROMPTS,
    DEFAULT_SCALES,
    FORMAT,
    RULE,
    Calibration,
    calibrate,
    calibration_prompts,
)


def calibration_settings(cfg, *, layers=None, scales=None, n_prompts: int | None = None
                         ) -> dict:
    """What the calibration of a config depends on (its cache key hashes this): the model,
    the vectors' inputs, the steering vectors and candidate grid, the prompts, the read-out
    layer, sampling, positions and the first seed. One random control, whatever the config's
    count: the rule needs one, and more would multiply the cost. Layers the model does not
    have are refused here, before anything is loaded or locked, when its layer count is known.

    Example:
        >>> import steer
        >>> s = calibration_settings(steer.load_config("configs/smoke.yaml"))
        >>> s["steer"], s["layers"], s["scales"][:3], len(s["prompts"])
        (['desperate', 'calm'], [2], [0.05, 0.1, 0.15], 8)
    """
    from steer.lm.load import known_layer_count
    from steer.sweep.plan import _digest_file

    s = cfg.steering
    if s is None:
        raise ConfigError(cfg.source, "steering", None,
                          "a steering section naming the vectors to calibrate")
    n_layers = known_layer_count(cfg.model.name)
    bad = [x for x in layers or [] if n_layers is not None and x >= n_layers]
    if bad:
        raise InputError(f"--layers: got {bad[0]}, expected a layer in 0..{n_layers - 1} "
                         f"({cfg.model.name} has {n_layers})")
    g = cfg.generation
    return {
        "format": FORMAT, "model": [cfg.model.name, cfg.model.dtype],
        "vectors": [cfg.vectors.model_dump(mode="json", exclude={"file", "corpus", "neutral"}),
                    cfg.vectors.corpus == "builtin",
                    [_digest_file(p) for p in cfg.vectors.files()]],
        "steer": list(s.vectors), "layers": list(layers or s.layers),
        "scales": sorted({abs(float(x)) for x in (scales or DEFAULT_SCALES)}),
        "prompts": calibration_prompts(n_prompts or DEFAULT_PROMPTS),
        "readout_layer": cfg.readout.layer, "max_new_tokens": g.max_new_tokens,
        "temperature": g.temperature, "top_p": g.top_p, "system_prompt": g.system_prompt,
        "positions": s.positions, "random_controls": 1, "seed": cfg.seeds[0]}


def settings_key(settings: dict) -> str:
    """The cache key of a calibration: a hash of its settings (`calibration_settings`).

    Example:
        >>> settings_key({"layers": [2]}) == settings_key({"layers": [2]}) != settings_key({})
        True
    """
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()
                          ).hexdigest()[:20]


def calibrate_config(cfg, model=None, *, layers=None, scales=None, n_prompts=None,
                     quiet: bool = True):
    """Calibrate the config's steering vectors on its model (loaded unless `model` is given),
    at its layers (or `layers`) and the candidate `scales` (default DEFAULT_SCALES), with its
    sampling settings; returns (Calibration, the model).

    Example:
        >>> import steer
        >>> cfg = steer.load_config("configs/smoke.yaml", ["generation.temperature=0"])
        >>> cal, model = calibrate_config(cfg, layers=[2], scales=[0.2], n_prompts=1)
        >>> sorted(set(cal.table.vector)), len(cal.table), len(cal.key), model.name
        (['calm', 'desperate', 'random-0'], 6, 20, 'tiny-random')
    """
    from steer import progress
    from steer.lm.batching import BatchSizer
    from steer.lm.load import load_model
    from steer.sweep.worker import load_vectors

    settings = calibration_settings(cfg, layers=layers, scales=scales, n_prompts=n_prompts)
    if model is None:
        if not quiet:
            progress.console.print(f"loading {cfg.model.name}", highlight=False)
        model = load_model(cfg.model.name, cfg.model.device, cfg.model.dtype)
    g = cfg.generation
    if g.decode != "auto":
        model.decode = g.decode
    vectors = load_vectors(cfg, model, quiet)
    sizer = BatchSizer(g.batch_size, model, 256 + g.max_new_tokens)
    cal = sizer.run(lambda bs: calibrate(
        model, vectors, steer=settings["steer"], layers=settings["layers"],
        scales=settings["scales"], prompts=settings["prompts"],
        readout_layer=cfg.readout.layer, max_new_tokens=g.max_new_tokens,
        temperature=g.temperature, top_p=g.top_p, system_prompt=g.system_prompt,
        positions=settings["positions"], seed=settings["seed"], random_controls=1,
        batch_size=bs, quiet=quiet))
    cal.key = settings_key(settings)
    return cal, model


def calibrate_into_run_dir(cfg, *, layers=None, scales=None, n_prompts=None,
                           quiet: bool = True):
    """`steer calibrate`: lock the config's run directory (before any work), calibrate, and
    write calibration.csv, .json and .png into its `calibration/` folder; returns
    (Calibration, that folder).

    Example:
        >>> import steer, tempfile
        >>> cfg = steer.load_config("configs/smoke.yaml", [f"output_dir={tempfile.mkdtemp()}",
        ...                                                "generation.temperature=0"])
        >>> cal, folder = calibrate_into_run_dir(cfg, layers=[2], scales=[0.2], n_prompts=1)
        >>> folder.parent.name, sorted(p.name for p in folder.iterdir())
        ('smoke', ['calibration.csv', 'calibration.json', 'calibration.png'])
    """
    from steer.results.plots import calibration_plot
    from steer.sweep.run import run_dir_for

    calibration_settings(cfg, layers=layers, scales=scales, n_prompts=n_prompts)  # bad input
    rd = run_dir_for(cfg)
    rd.lock()
    cal, _ = calibrate_config(cfg, layers=layers, scales=scales, n_prompts=n_prompts,
                              quiet=quiet)
    rd.write_calibration(cal.table, cal.to_json(),
                         calibration_plot(cal.table, cal.recommendation))
    return cal, rd.calibration_dir


def parse_numbers(text: str, option: str, kind: type) -> list:
    """A comma-separated option (`--layers 8,12,16`, `--scales 0.05,0.1`), checked: layers are
    numbers >= 0, scales magnitudes in (0, 10]; an InputError line otherwise.

    Example:
        >>> parse_numbers("8, 12,16", "--layers", int), parse_numbers("0.05,.1", "--scales", float)
        ([8, 12, 16], [0.05, 0.1])
    """
    what = ("layer numbers such as 8,12,16" if kind is int else
            "scale magnitudes in (0, 10] such as 0.05,0.1,0.2 (both signs are tried)")
    try:
        values = [kind(p.strip()) for p in text.split(",")]
    except ValueError:
        values = []
    ok = values and all(x >= 0 if kind is int else (math.isfinite(x) and 0 < x <= 10)
                        for x in values)
    if not ok:
        raise InputError(f"{option}: got {text!r}, expected {what}")
    return values


# ---------------------------------------------------------------- `steering.scales: auto`


@dataclass
class AutoScales:
    """A config's `scales: auto` resolved (`resolve_auto_scales`): the scales run, the
    manifest's `calibration` entry, and the Calibration when it was computed now (None when a
    cached one was reused)."""

    scales: list[float]
    entry: dict
    computed: Calibration | None

    @property
    def manifest(self) -> dict:
        """What the run's manifest.json gets: `calibration`, this entry."""
        return {"calibration": self.entry}

    def write(self, rd) -> None:
        """Write a calibration computed now into the run directory `rd` (a reused one is
        there already)."""
        from steer.results.plots import calibration_plot

        cal = self.computed
        if cal is not None:
            rd.write_calibration(cal.table, cal.to_json(),
                                 calibration_plot(cal.table, cal.recommendation))


def _run_scale(record: dict, layers: list[int], source: str) -> float:
    """The s of [-s, -s/2, 0, s/2, s]: the smallest of the config's layers' largest fluent
    scales, so that every condition the run plans is fluent (with one layer: the
    recommendation's scale)."""
    by_layer = {b["layer"]: b["largest_fluent_scale"]
                for b in record["recommendation"]["by_layer"]}
    layer = min(layers, key=lambda L: by_layer.get(L, 0.0))
    s = by_layer.get(layer, 0.0)
    if not s:
        smallest = record["grid"]["scales"][0]
        raise InputError(f"{source}: steering.scales: 'auto' found no fluent scale at layer "
                         f"{layer} (the smallest candidate, {smallest:g}, already fails); set "
                         f"the scales by hand, or see `steer calibrate {source}`")
    return float(s)


def _reusable(cfg, cached: dict | None) -> dict | None:
    key = settings_key(calibration_settings(cfg))
    ok = isinstance(cached, dict) and cached.get("key") == key and \
        cached.get("format") == FORMAT and isinstance(cached.get("recommendation"), dict)
    return cached if ok else None


def resolve_auto_scales(cfg, cached: dict | None, model=None, quiet: bool = True):
    """(config, model, AutoScales or None): for `steering.scales: auto`, a copy of `cfg` whose
    scales are [-s, -s/2, 0, s/2, s] (see `_run_scale`), from `cached` (a run directory's
    calibration.json) when it was made from the same settings, else calibrated now (the model
    is loaded then, and returned for the run to use). Writes nothing. Other configs are
    returned as they are.

    Example:
        >>> import steer
        >>> cfg = steer.load_config("configs/smoke.yaml", ["steering.scales=auto"])
        >>> cached = {"format": FORMAT, "key": settings_key(calibration_settings(cfg)),
        ...           "grid": {"scales": [0.1, 0.2, 0.4]}, "recommendation": {
        ...               "layer": 2, "scale": 0.2,
        ...               "by_layer": [{"layer": 2, "largest_fluent_scale": 0.2}]}}
        >>> out, model, auto = resolve_auto_scales(cfg, cached)
        >>> out.steering.scales, auto.entry["reused"], model, cfg.steering.scales
        ([-0.2, -0.1, 0.0, 0.1, 0.2], True, None, 'auto')
    """
    from steer.sweep.plan import auto_scales
    from steer.sweep.rundir import CALIBRATION_FILES

    if cfg.steering is None or cfg.steering.scales != "auto":
        return cfg, model, None
    record, computed = _reusable(cfg, cached), None
    if record is None:
        computed, model = calibrate_config(cfg, model, quiet=quiet)
        record = computed.to_json()
    s = _run_scale(record, cfg.steering.layers, cfg.source)
    out = cfg.model_copy(deep=True)
    out.steering.scales = auto_scales(s)
    rec = record["recommendation"]
    entry = {"key": record["key"], "scale": s, "scales": out.steering.scales,
             "reused": computed is None, "files": list(CALIBRATION_FILES),
             "recommendation": {k: rec.get(k) for k in (
                 "layer", "scale", "readout_layer", "readout_shift_per_unit", "at_grid_edge")},
             "rule": RULE}
    return out, model, AutoScales(out.steering.scales, entry, computed)


def planned_config(cfg, cached: dict | None):
    """(config, note) for planning without loading anything (`--dry-run`, `steer validate`):
    `scales: auto` takes the cached calibration's scales when there is one for these settings,
    else five stand-ins (the plan's counts are right; its steered cells are all to run).

    Example:
        >>> import steer
        >>> cfg = steer.load_config("configs/smoke.yaml", ["steering.scales=auto"])
        >>> out, note = planned_config(cfg, cached=None)
        >>> len(out.steering.scales), note
        (5, 'steering.scales: auto, calibrated when the run starts (5 scales)')
    """
    from steer.sweep.plan import AUTO_FRACTIONS, auto_scales

    if cfg.steering is None or cfg.steering.scales != "auto":
        return cfg, None
    record = _reusable(cfg, cached)
    out = cfg.model_copy(deep=True)
    if record is not None:
        try:
            out.steering.scales = auto_scales(_run_scale(record, cfg.steering.layers, ""))
            return out, f"steering.scales: auto = {out.steering.scales} (cached calibration)"
        except InputError:
            pass
    out.steering.scales = list(AUTO_FRACTIONS)
    return out, (f"steering.scales: auto, calibrated when the run starts "
                 f"({len(AUTO_FRACTIONS)} scales)")
