"""The sandbox's cost per coding attempt, against the in-process-hook sandbox it replaced.

An attempt runs the visible and the hidden tests of one task, each in its own sandbox. Every
task of the built-in code suite is attempted with its reference solution, alternating the old
and the new sandbox in one process (the old one is read from git, commit 8085e2b), and the
median time per attempt is compared.

    .venv/bin/python benchmarks/sandbox_bench.py [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_COMMIT = "8085e2b"


def old_sandbox():
    """The previous sandbox module, loaded from git into a temporary file."""
    src = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:steer/tasks/sandbox.py"],
                         capture_output=True, text=True, check=True).stdout
    path = Path(tempfile.mkdtemp()) / "old_sandbox.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("old_sandbox", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["old_sandbox"] = mod  # dataclasses look their module up while being built
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    sys.path.insert(0, str(ROOT))
    from steer.tasks.items import load_code_tasks
    from steer.tasks.sandbox import isolation_problem
    from steer.tasks.testexpr import run_tests

    problem = isolation_problem()
    if problem:
        sys.exit(f"no OS-level isolation here: {problem}")
    old = old_sandbox()
    tasks = load_code_tasks()
    times: dict[str, list[float]] = {"old": [], "new": []}
    agree = 0
    for _ in range(args.rounds):
        for t in tasks:
            t0 = time.perf_counter()
            ov = old.run_tests(t.reference, list(t.visible_tests))
            oh = old.run_tests(t.reference, list(t.hidden_tests))
            t1 = time.perf_counter()
            nv = run_tests(t.reference, list(t.visible_tests))
            nh = run_tests(t.reference, list(t.hidden_tests))
            t2 = time.perf_counter()
            times["old"].append(t1 - t0)
            times["new"].append(t2 - t1)
            agree += (ov.tests == nv.tests and oh.tests == nh.tests)
    n = len(times["new"])
    res = {"attempts": n, "tasks": len(tasks),
           "old_ms_median": 1000 * statistics.median(times["old"]),
           "new_ms_median": 1000 * statistics.median(times["new"]),
           "same_test_outcomes": agree}
    res["ratio_new_over_old"] = res["new_ms_median"] / res["old_ms_median"]
    print(f"{n} attempts ({len(tasks)} tasks x {args.rounds} rounds), visible + hidden tests each")
    print(f"  old (audit hook + unshare --net): {res['old_ms_median']:.1f} ms per attempt")
    print(f"  new (bubblewrap + seccomp):       {res['new_ms_median']:.1f} ms per attempt")
    print(f"  ratio new/old: {res['ratio_new_over_old']:.2f}; "
          f"identical test outcomes: {agree}/{n}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
