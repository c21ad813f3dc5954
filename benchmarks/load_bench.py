"""Model load: cold (dequantizing the embedded GGUF, as on a fresh machine) against warm (from
steer's safetensors cache), with each one's peak resident memory.

    python benchmarks/load_bench.py [--reps 3]

Each load runs in a fresh subprocess (so imports and caches start cold and the peak RSS is that
load's own), alternating cold and warm. The cold side gets an empty STEER_CACHE; the warm side a
cache filled beforehand. Writes benchmarks/results/load.json; the figure is the cold/warm ratio
measured in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"

CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
import torch
from steer import load_model
t1 = time.perf_counter()
m = load_model("smollm2-135m-instruct", device="cpu", dtype="float32")
t2 = time.perf_counter()
ids, mask = m.encode(["Hello there."])
with torch.no_grad():
    m.bridge(ids, attention_mask=mask)
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "first_forward_s": t3 - t2,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(cache: Path) -> dict:
    env = {**os.environ, "STEER_CACHE": str(cache), "OMP_NUM_THREADS": "2"}
    res = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                         timeout=600)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    runs: dict[str, list[dict]] = {"cold": [], "warm": []}
    with tempfile.TemporaryDirectory() as warm_dir:
        child(Path(warm_dir))  # fill the warm cache
        for r in range(args.reps):
            for side in (("cold", "warm") if r % 2 == 0 else ("warm", "cold")):
                if side == "cold":
                    with tempfile.TemporaryDirectory() as cold_dir:
                        runs["cold"].append(child(Path(cold_dir)))
                else:
                    runs["warm"].append(child(Path(warm_dir)))

    def med(side: str, key: str) -> float:
        return round(statistics.median(x[key] for x in runs[side]), 3)

    out = {
        "machine": {"cpu": _cpu(), "logical_cpus": os.cpu_count(), "device": "cpu",
                    "loadavg": list(os.getloadavg())},
        "reps": args.reps,
        "cold_load_s": med("cold", "load_s"), "warm_load_s": med("warm", "load_s"),
        "cold_over_warm": round(med("cold", "load_s") / med("warm", "load_s"), 2),
        "import_s": med("warm", "import_s"),
        "first_forward_s": med("warm", "first_forward_s"),
        "cold_peak_rss_mb": med("cold", "peak_rss_mb"),
        "warm_peak_rss_mb": med("warm", "peak_rss_mb"),
        "runs": runs,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "load.json").write_text(json.dumps(out, indent=2))
    print(f"model load (embedded SmolLM2-135M, fp32, CPU), median of {args.reps}:")
    print(f"  cold (dequantize GGUF) {out['cold_load_s']:.2f} s, peak RSS "
          f"{out['cold_peak_rss_mb']:.0f} MB")
    print(f"  warm (safetensors cache) {out['warm_load_s']:.2f} s, peak RSS "
          f"{out['warm_peak_rss_mb']:.0f} MB")
    print(f"  cold / warm = {out['cold_over_warm']:.1f}x; imports {out['import_s']:.1f} s")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
