"""Print one table of every benchmark figure in benchmarks/results/*.json (what `make bench`
ends with). Missing files are listed as not run."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).resolve().parent / "results"


def _get(d: dict, path: str):
    for part in path.split("."):
        if not isinstance(d, dict) or part not in d:
            return None
        d = d[part]
    return d


# (file, figure, json path, target, unit)
FIGURES = [
    ("throughput", "steered / unsteered generation", "steered_vs_unsteered.ratio",
     ">= 0.97", "x"),
    ("throughput", "sweep: batched rows / one call per cell", "sweep_batched_vs_per_cell.speedup",
     ">= 5", "x"),
    ("throughput", "bridge steered / plain HF generate", "bridge_vs_hf.ratio", ">= 0.95",
     "x"),
    ("load", "model load cold / warm", "cold_over_warm", "", "x"),
    ("load", "warm model load", "warm_load_s", "", "s"),
    ("load", "peak RSS, cold load", "cold_peak_rss_mb", "", "MB"),
    ("vectors", "171-vector build", "build_s", "< 300", "s"),
    ("vectors", "read-out pass: parallel threads / one", "parallel_threads_speedup", "", "x"),
    ("vectors", "cached vector reload", "cached_reload_s", "< 2", "s"),
    ("vectors-gemma-3-270m", "171-vector build, Gemma 3 270M", "build_s", "", "s"),
    ("geometry", "story PC1 agreement, SmolLM2 ~ Gemma",
     "story_pc1_agreement_at_half_depth.smollm2-135m-instruct ~ gemma-3-270m", "", ""),
]


def main() -> None:
    table = Table(title="steer benchmarks (ratios are against a baseline run in the same process)")
    for col in ("figure", "value", "target", "file"):
        table.add_column(col, justify="right" if col in ("value", "target") else "left")
    for name, label, path, target, unit in FIGURES:
        f = RESULTS / f"{name}.json"
        value = _get(json.loads(f.read_text()), path) if f.is_file() else None
        shown = "not run" if value is None else f"{value:.3g} {unit}".strip()
        table.add_row(label, shown, target, f"{name}.json")
    Console().print(table)


if __name__ == "__main__":
    main()
