"""The runs in a folder, newest first: what `steer runs` prints, one row per run directory.

A run directory is any sub-folder holding a `manifest.json`; one whose manifest cannot be read
is listed with status `unreadable` rather than hidden, so nothing on disk goes unseen.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from steer.errors import InputError

COLUMNS = ["name", "model", "status", "cells", "done", "failed", "wall_s", "finished",
           "headline", "path"]


def headline(effects: pd.DataFrame) -> str:
    """One line for the strongest effect called real (largest |slope| among `effect` rows), or
    why there is none.

    Example:
        >>> import pandas as pd
        >>> e = pd.DataFrame({"task": ["s", "s"], "vector": ["calm", "desperate"],
        ...                   "layer": [12, 12], "metric": ["readout.calm", "readout.desperate"],
        ...                   "slope": [0.10, 0.19], "verdict": ["effect", "effect"]})
        >>> headline(e)
        'desperate L12 -> readout.desperate +0.19/unit (s; 2 effects)'
        >>> headline(e.assign(verdict="no effect"))
        'no effect called real (2 rows tested)'
    """
    if effects.empty or "verdict" not in effects:
        return "no verdicts"
    real = effects[effects.verdict == "effect"]
    if real.empty:
        tested = int(effects.verdict.isin(["effect", "no effect"]).sum())
        return (f"no effect called real ({tested} rows tested)" if tested
                else "no verdicts (" + ", ".join(sorted(set(effects.verdict) - {"control"})
                                                 or ["controls only"]) + ")")
    top = real.loc[real.slope.abs().idxmax()]
    n = len(real)
    return (f"{top.vector} L{int(top.layer)} -> {top.metric} {top.slope:+.2g}/unit "
            f"({top.task}; {n} effect{'s' if n > 1 else ''})")


def _row(path: Path) -> dict:
    row = dict.fromkeys(COLUMNS)
    row.update(name=path.name, path=str(path), headline="")
    try:
        m = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        if not isinstance(m, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        return {**row, "status": "unreadable", "headline": f"manifest.json: {e}"[:120]}
    cells = m.get("cells") if isinstance(m.get("cells"), dict) else {}
    history = [h for h in m.get("history") or [] if isinstance(h, dict)]
    model = m.get("model")
    total = cells.get("total")
    failed = cells.get("failed", 0)
    row.update(
        name=str(m.get("name") or path.name),
        model=(model.get("name") if isinstance(model, dict) else model),
        status=str(m.get("status", "unknown")), cells=total, failed=failed,
        done=(total - failed if isinstance(total, int) and isinstance(failed, int) else None),
        wall_s=(m.get("timings_s") or {}).get("total"),
        finished=history[-1].get("at") if history else None)
    try:
        effects = pd.read_csv(path / "effects.csv") if (path / "effects.csv").is_file() \
            else pd.DataFrame()
        row["headline"] = headline(effects)
    except (OSError, ValueError, KeyError, pd.errors.ParserError) as e:
        row["headline"] = f"effects.csv unreadable: {e}"[:120]
    return row


def list_runs(folder: str | Path = "runs") -> pd.DataFrame:
    """One row per run directory in `folder` (its sub-folders with a manifest.json), newest
    first: name, model, status, cells (planned), done, failed, wall_s, finished (the time of
    its last history entry), headline (the strongest effect called real) and path. An empty
    frame with these columns when there are none; an InputError when `folder` is not a
    folder.

    Example:
        >>> import steer, tempfile
        >>> out = tempfile.mkdtemp()
        >>> cfg = steer.load_config("configs/smoke.yaml",
        ...                         overrides=[f"output_dir={out}", "seeds=[0]"])
        >>> _ = steer.run(cfg, quiet=True)
        >>> t = steer.list_runs(out)
        >>> r = t.iloc[0]
        >>> r["name"], r["model"], r["status"], int(r["done"]), int(r["failed"])
        ('smoke', 'tiny-random', 'complete', 9, 0)
        >>> t.loc[0, "headline"]
        'no effect called real (348 rows tested)'
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{folder}: got {'a file' if root.exists() else 'nothing'}, expected a "
                         "folder of run directories (a config's output_dir, default runs)")
    rows = [_row(p) for p in sorted(root.iterdir()) if (p / "manifest.json").is_file()]
    if not rows:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.DataFrame(rows, columns=COLUMNS)
    mtime = [(Path(p) / "manifest.json").stat().st_mtime for p in df.path]
    return (df.assign(_t=mtime).sort_values("_t", ascending=False, kind="stable")
            .drop(columns="_t").reset_index(drop=True))
