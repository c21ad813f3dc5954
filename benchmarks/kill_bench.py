"""Kill a real `steer run` at many points, resume it, and check that nothing was lost and nothing
was said that is not so.

    python benchmarks/kill_bench.py [--points 20] [--signals 6] [--disk] [--keep DIR]

Each point starts `steer run` (a small sweep on the random-init `tiny-random` model) as a real
subprocess, waits for its moment (a time spread over an uninterrupted run's duration, or an
event seen on disk or on stderr: the run directory marked running, the first new cell, the
aggregation, the plots, the report), sends the signal, then checks what the dead run left:

- the manifest never says `complete` while a cell of the plan is missing;
- every cell file is whole; after SIGTERM or SIGINT: exit 130, one `error: interrupted` line,
  no traceback, and a manifest marked `interrupted` whose cell counts match the disk;

then reruns the same command until it completes (a SIGKILLed session must show as `killed` in
the history) and compares results.parquet, summary.csv and samples.jsonl with an uninterrupted
run's, exactly. Kinds of run: `fresh` (an empty run directory) and two extensions of a complete
run, a scale added (`extend-scale`) and a seed added (`extend-seed`); an extension's reference
is the complete run extended without interruption.

`--disk` adds the disk faults, each in a private mount namespace (root only; skipped when
mounting is not permitted): output on a read-only tmpfs, and on tmpfs disks too small to hold
the run (so that writing fails at different phases), each then enlarged and the run resumed.

Prints one table row per point (point, phase killed in, resumed ok, equal) and the count of
points survived; writes benchmarks/results/kill.json. tests/test_faults.py runs a few points
through this same code.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import yaml

import steer

ROOT = Path(__file__).resolve().parents[1]
NAME = "kill"
CONFIG = {
    "name": NAME, "model": {"name": "tiny-random"},
    "steering": {"vectors": ["desperate", "calm"], "layers": [2], "scales": [-0.2, 0.0, 0.2],
                 "random_controls": 1},
    "readout": {"layer": 3, "emotions": ["desperate", "calm"]},
    "tasks": [{"name": "stress", "prompts": ["The tests keep failing.", "The server is down."]}],
    "generation": {"max_new_tokens": 3, "batch_size": 4},  # 2 conditions per unit
    "seeds": [0, 1],
}  # 14 cells; a scale added makes 20, a seed added 21
# kind of run -> the --set overrides that make it (extensions start from a complete `fresh` run)
KINDS = {"fresh": [], "extend-scale": ["steering.scales=[-0.2, 0.0, 0.2, 0.4]"],
         "extend-seed": ["seeds=[0, 1, 2]"]}
SIGNALS = {"KILL": signal.SIGKILL, "TERM": signal.SIGTERM, "INT": signal.SIGINT}
EVENTS = ("config", "loading", "running", "cell:1", "aggregating", "plots", "report")
COMPARED = ("results.parquet", "summary.csv", "samples.jsonl")


@dataclass
class Point:
    kind: str  # a key of KINDS
    sig: str  # a key of SIGNALS
    at: float | str  # a fraction of the uninterrupted run's duration, or one of EVENTS

    def __str__(self) -> str:
        at = f"t={self.at:.2f}" if isinstance(self.at, float) else self.at
        return f"{self.kind} SIG{self.sig} @{at}"


@dataclass
class Outcome:
    point: str
    phase: str = ""
    rc: int | None = None
    status: str | None = None  # the manifest's, right after the signal
    resumed: bool | None = False  # None: not tried (a fault checked without a resume)
    equal: bool | None = False
    problems: list[str] = field(default_factory=list)

    @property
    def survived(self) -> bool:
        return self.resumed is not False and self.equal is not False and not self.problems


class Proc:
    """A `steer run` subprocess whose stdout and stderr are read as they come (so the harness
    sees its progress lines, and the pipes never fill)."""

    def __init__(self, cmd: list[str], env: dict):
        self.t0, self.wall0 = time.perf_counter(), time.time()
        self.popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [threading.Thread(target=self._read, args=(s, lines), daemon=True)
                         for s, lines in ((self.popen.stdout, self.out),
                                          (self.popen.stderr, self.err))]
        for r in self._readers:
            r.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait(self, timeout: float = 600) -> int:
        try:
            rc = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            rc = self.popen.wait()
        for r in self._readers:
            r.join(10)
        return rc

    @property
    def stderr(self) -> str:
        return "\n".join(self.err)


def steer_exe() -> str:
    return shutil.which("steer", path=str(Path(sys.executable).parent)) or "steer"


def read_manifest(run: Path) -> dict:
    try:
        return json.loads((run / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def fresh_since(path: Path, wall0: float) -> bool:
    """Whether `path` was written after `wall0` (copies keep their old times: copy2)."""
    try:
        return path.stat().st_mtime >= wall0 - 0.01
    except OSError:
        return False


def compare_runs(a: Path, b: Path) -> list[str]:
    """Differences between two run directories' tables (empty when they are equal exactly)."""
    diffs = []
    for name in COMPARED:
        pa, pb = a / name, b / name
        if not pa.is_file() or not pb.is_file():
            diffs.append(f"{name} missing")
            continue
        try:
            if name.endswith(".parquet"):
                pd.testing.assert_frame_equal(pd.read_parquet(pa), pd.read_parquet(pb),
                                              check_exact=True)
            elif name.endswith(".csv"):
                pd.testing.assert_frame_equal(pd.read_csv(pa), pd.read_csv(pb),
                                              check_exact=True)
            elif pa.read_bytes() != pb.read_bytes():
                diffs.append(f"{name} differs")
        except AssertionError as e:
            diffs.append(f"{name}: {' '.join(str(e).split())[:200]}")
    return diffs


class Harness:
    """Runs, strikes, resumes and compares. `work`: a scratch folder (configs, runs, and the
    cache unless STEER_CACHE is set in `env`)."""

    def __init__(self, work: Path, env: dict | None = None, config: dict | None = None):
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "COLUMNS": "120", **(env or {})}
        self.env.setdefault("STEER_CACHE", str(self.work / "cache"))
        # One thread per run: on a shared 2-core box, OpenMP threads spinning against other
        # processes make a run 4x slower (the results are the same for every run here).
        self.env.setdefault("OMP_NUM_THREADS", "1")
        self.config = self.work / "kill.yaml"
        self.config.write_text(yaml.safe_dump({**(config or CONFIG),
                                               "output_dir": str(self.work / "unused")}))
        self.refs: dict[str, Path] = {}
        self.durations: dict[str, float] = {}
        if (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) == signal.SIG_IGN):
            # Started in the background by a shell, which ignores SIGINT, as its children then
            # would: undo it, or the SIGINT points would test nothing.
            signal.signal(signal.SIGINT, signal.default_int_handler)

    # ------------------------------------------------------------ running

    def overrides(self, out: Path, kind: str) -> list[str]:
        return [f"output_dir={out}", *KINDS[kind]]

    def command(self, out: Path, kind: str) -> list[str]:
        cmd = [steer_exe(), "run", str(self.config)]
        for o in self.overrides(out, kind):
            cmd += ["--set", o]
        return cmd

    def plan(self, out: Path, kind: str) -> steer.Work:
        return steer.plan_work(steer.load_config(self.config, self.overrides(out, kind)))

    def plan_cells_on_disk(self, out: Path, kind: str) -> int:
        return self.plan(out, kind).done

    def start(self, out: Path, kind: str) -> Proc:
        return Proc(self.command(out, kind), self.env)

    def reference(self, kind: str) -> Path:
        """The uninterrupted run of `kind` (an extension: of the complete fresh run)."""
        if kind in self.refs:
            return self.refs[kind]
        out = self.work / f"ref-{kind}"
        shutil.rmtree(out, ignore_errors=True)
        self.seed_dir(out, kind)
        proc = self.start(out, kind)
        rc = proc.wait()
        run = out / NAME
        if rc != 0 or read_manifest(run).get("status") != "complete":
            raise RuntimeError(f"the reference run {kind} failed (exit {rc}): "
                               f"{proc.stderr[-2000:]}")
        self.durations[kind] = time.perf_counter() - proc.t0
        self.refs[kind] = run
        return run

    def seed_dir(self, out: Path, kind: str) -> None:
        """An empty output folder, or for an extension one holding the complete fresh run."""
        out.mkdir(parents=True, exist_ok=True)
        if kind != "fresh":
            shutil.copytree(self.reference("fresh"), out / NAME, copy_function=shutil.copy2)

    # ------------------------------------------------------------ one point

    def triggered(self, at: float | str, kind: str, proc: Proc, run: Path, before: set) -> bool:
        if isinstance(at, float):
            return time.perf_counter() - proc.t0 >= at * self.durations[kind]
        if at == "config":
            return bool(proc.err)
        if at == "loading":
            return any(line.startswith("loading ") for line in proc.err)
        if at == "running":
            return (fresh_since(run / "manifest.json", proc.wall0)
                    and read_manifest(run).get("status") == "running")
        if at.startswith("cell:"):
            return len(cells_on_disk(run) - before) >= int(at.split(":")[1])
        if at == "aggregating":
            return fresh_since(run / "samples.jsonl", proc.wall0)
        if at == "plots":
            return any(fresh_since(p, proc.wall0) for p in (run / "plots").glob("*.png"))
        if at == "report":
            return fresh_since(run / "report.md", proc.wall0)
        raise ValueError(f"unknown moment {at!r}")

    def strike(self, point: Point, out: Path) -> Outcome:
        """Start the run, signal it at its moment, and check what it left."""
        res = Outcome(str(point))
        run = out / NAME
        work = self.plan(out, point.kind)
        before = cells_on_disk(run)
        proc = self.start(out, point.kind)
        hit = False
        while proc.popen.poll() is None and time.perf_counter() - proc.t0 < 600:
            if self.triggered(point.at, point.kind, proc, run, before):
                proc.popen.send_signal(SIGNALS[point.sig])
                hit = True
                break
            time.sleep(0.003)
        res.rc = proc.wait()
        manifest = read_manifest(run)
        res.status = manifest.get("status")
        mine = fresh_since(run / "manifest.json", proc.wall0)
        res.phase = self.phase(proc, run, before, work.pending_cells, mine, res.status)
        if not hit or res.rc == 0:
            res.problems.append("the run ended before the signal")
            res.phase = "finished before the signal"
            return res
        p = res.problems
        # Never complete with cells missing (the extension case: a stale "complete").
        if res.status == "complete" and self.plan(out, point.kind).pending_cells:
            p.append(f"manifest complete with {self.plan(out, point.kind).pending_cells} "
                     "cells missing")
        for c in run.glob("cells/*.json"):
            try:
                assert json.loads(c.read_text())["samples"]
            except (ValueError, KeyError, AssertionError):
                p.append(f"cell {c.name} is not whole")
        if point.sig == "KILL":
            if res.rc != -signal.SIGKILL:
                p.append(f"exit {res.rc}, expected death by SIGKILL")
            if mine and res.status not in ("running", "complete"):
                p.append(f"manifest {res.status!r} after SIGKILL, expected running")
            return res
        # SIGTERM and SIGINT: one line, exit 130, a manifest that says so and counts true.
        if res.rc != 130:
            p.append(f"exit {res.rc}, expected 130")
        if "Traceback" in proc.stderr:
            p.append("a traceback on stderr")
        if not any(line.startswith("error: interrupted") for line in proc.err):
            p.append("no 'error: interrupted' line")
        if mine:
            if res.status not in ("interrupted", "complete"):
                p.append(f"manifest {res.status!r}, expected interrupted")
            cells, on_disk = manifest.get("cells", {}), self.plan_cells_on_disk(out, point.kind)
            if cells.get("reused", 0) + cells.get("computed", 0) != on_disk:
                p.append(f"manifest counts {cells} but {on_disk} of the plan's cells on disk")
            if cells.get("reused") != work.done:
                p.append(f"manifest reused {cells.get('reused')}, not the cells there before")
        return res

    def phase(self, proc: Proc, run: Path, before: set, pending: int, mine: bool,
              status: str | None) -> str:
        """Where the run was when it died, from what it printed and wrote."""
        new = len(cells_on_disk(run) - before)
        if not proc.err:
            return "startup (imports)"
        if not mine:
            return "config, plan, run directory"
        if new == 0 and pending:
            return "model load, vectors" if any(x.startswith("loading ") for x in proc.err) \
                else "run directory, config.yaml"
        if new < pending:
            return f"cells ({new}/{pending} new)"
        if status == "complete":
            return "after the manifest (printing)"
        if fresh_since(run / "report.md", proc.wall0):
            return "report, manifest"
        if any(fresh_since(p, proc.wall0) for p in (run / "plots").glob("*.png")):
            return "aggregating: plots"
        if fresh_since(run / "samples.jsonl", proc.wall0):
            return "aggregating: tables"
        return "aggregating: reading cells"

    def resume(self, out: Path, kind: str, res: Outcome, tries: int = 3) -> None:
        """Rerun the same command until the run completes; check its manifest says how."""
        run = out / NAME
        for _ in range(tries):
            was = read_manifest(run)
            on_disk = self.plan_cells_on_disk(out, kind)
            proc = self.start(out, kind)
            rc = proc.wait()
            m = read_manifest(run)
            if rc != 0 or "Traceback" in proc.stderr:
                res.problems.append(f"resume exit {rc}: {proc.stderr[-300:]}")
                continue
            if m.get("cells", {}).get("reused") != on_disk:
                res.problems.append(f"resume reused {m.get('cells')} with {on_disk} on disk")
            if was.get("status") == "running" and (len(m.get("history", [])) < 2 or
                                                   m["history"][-2]["status"] != "killed"):
                res.problems.append("a killed session is not marked killed in the history")
            if m.get("status") == "complete":
                res.resumed = not list(run.rglob(".*.tmp"))
                if not res.resumed:
                    res.problems.append("temporary files left after the resume")
                return

    def run_point(self, point: Point, index: int, tries: int = 3) -> Outcome:
        """Strike, resume, compare. A timed point that the run outlived (the machine got faster
        than during the reference run) is tried again at the same fraction of that run's time."""
        self.reference(point.kind)
        out = self.work / f"p{index:02d}"
        for _ in range(tries):
            shutil.rmtree(out, ignore_errors=True)
            self.seed_dir(out, point.kind)
            t = time.perf_counter()
            res = self.strike(point, out)
            if res.phase != "finished before the signal" or not isinstance(point.at, float):
                break
            self.durations[point.kind] = time.perf_counter() - t
        if res.phase != "finished before the signal":
            self.resume(out, point.kind, res)
            diffs = compare_runs(out / NAME, self.refs[point.kind]) if res.resumed else []
            res.equal = res.resumed and not diffs
            res.problems += diffs
        shutil.rmtree(out, ignore_errors=True)
        return res

    # ------------------------------------------------------------ the disk

    def disk_fault(self, size: str, readonly: bool = False, kind: str = "fresh",
                   resume: bool = True) -> Outcome:
        """Run on a tmpfs of `size` (read-only if asked) in a private mount namespace, then give
        it room (read-write, 64 MB) and resume (unless `resume` is false). A size like "+8k" is
        that much room beyond the run being extended. Needs root and `unshare`."""
        res = Outcome(f"{kind} on a {'read-only' if readonly else size} tmpfs")
        if size.startswith("+"):
            size = f"{_pages(self.reference('fresh')) + _pages_of(size[1:])}k"
        ref = self.reference(kind)
        base = Path(tempfile.mkdtemp(prefix="disk-", dir=self.work))
        mnt, keep = base / "mnt", base / "keep"
        mnt.mkdir()
        keep.mkdir()
        cmd = " ".join(map(_quote, self.command(mnt / "out", kind)))
        # as seed_dir: empty, or for an extension the complete fresh run to extend
        seed = f"cp -a {self.reference('fresh')} {mnt}/out/{NAME}" if kind != "fresh" else ""
        script = f"""
set -e
mount -t tmpfs -o size={'64m' if readonly else size} tmpfs {mnt}
mkdir -p {mnt}/out
{seed}
{'mount -o remount,ro ' + str(mnt) if readonly else 'true'}
set +e
find {mnt}/out -type f -exec sha256sum {{}} + | sort > {keep}/before.sum
{cmd} > {keep}/first.out 2> {keep}/first.err; echo $? > {keep}/first.rc
find {mnt}/out -type f -exec sha256sum {{}} + | sort > {keep}/after.sum
cp -a {mnt}/out {keep}/first 2>/dev/null
[ {int(resume)} = 1 ] || exit 0
mount -o remount,rw,size=64m {mnt}
{cmd} > {keep}/second.out 2> {keep}/second.err; echo $? > {keep}/second.rc
cp -a {mnt}/out {keep}/final
"""
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               script], env=self.env, capture_output=True, text=True,
                              timeout=900)
        if done.returncode != 0 or not (keep / ("second.rc" if resume else "first.rc")).is_file():
            res.problems.append(f"the mount script failed: {done.stderr[-500:]}")
            return res
        rc1, err1 = int((keep / "first.rc").read_text()), (keep / "first.err").read_text()
        res.rc = rc1
        first = read_manifest(keep / "first" / NAME)
        res.status = first.get("status")
        errors = [x for x in err1.splitlines() if x.startswith("error:")]
        sums = [dict(reversed(line.split(None, 1)) for line in
                     (keep / f"{when}.sum").read_text().splitlines()) for when in ("before",
                                                                                    "after")]
        manifest = f"{mnt}/out/{NAME}/manifest.json"
        rewritten = sums[0].get(manifest) != sums[1].get(manifest)
        res.phase = _disk_phase(errors[0] if errors else "", mnt / "out" / NAME, rewritten)
        p = res.problems
        if rc1 == 0:
            res.phase = "no fault: the disk had room"
        else:
            if "Traceback" in err1:
                p.append("a traceback on stderr")
            if len(errors) != 1 or not errors[0].startswith("error: cannot write to "):
                p.append(f"expected one 'error: cannot write to' line, got {errors}")
            if rc1 not in (1, 2):
                p.append(f"exit {rc1}, expected 1 or 2")
        total = read_manifest(ref)["cells"]["total"]
        if res.status == "complete" and rewritten and total != len(
                list((keep / "first" / NAME / "cells").glob("*.json"))):
            p.append("manifest complete with cells missing")
        added = [f for f in set(sums[1]) - set(sums[0]) if "/cells/" in f]
        if added and not rewritten:
            p.append(f"{len(added)} cells added under a manifest that was not marked running")
        if readonly and sums[0] != sums[1]:
            p.append("files changed on a read-only disk")
        shown = errors[0][len("error: "):].replace(str(mnt), "<tmpfs>") if errors else "no error"
        res.point += f": {shown}"
        if not resume:
            res.resumed = res.equal = None
            shutil.rmtree(base, ignore_errors=True)
            return res
        rc2 = int((keep / "second.rc").read_text())
        m = read_manifest(keep / "final" / NAME)
        res.resumed = rc2 == 0 and m.get("status") == "complete"
        if not res.resumed:
            p.append(f"resume exit {rc2}: {(keep / 'second.err').read_text()[-300:]}")
        diffs = compare_runs(keep / "final" / NAME, ref) if res.resumed else []
        res.equal = res.resumed and not diffs
        p += diffs
        shutil.rmtree(base, ignore_errors=True)
        return res


def cells_on_disk(run: Path) -> set[str]:
    return {p.stem for p in (run / "cells").glob("*.json")} if (run / "cells").is_dir() \
        else set()


def _disk_phase(error: str, run: Path, rewritten: bool) -> str:
    """Where a run on a full or read-only disk stopped, from the file its error names."""
    where = error.split("cannot write to ", 1)[-1].rsplit(": ", 1)[0]
    name = where[len(str(run)) + 1:] if where.startswith(f"{run}/") else ""
    if not name:
        return "run directory (lock)" if where == str(run) else "-"
    if name == "manifest.json":
        return "manifest (end)" if rewritten else "manifest (start)"
    if name.startswith(("cells/", "failures/")):
        return "cells"
    if name.startswith("plots/"):
        return "aggregating: plots"
    if name in ("samples.jsonl", "results.parquet", "summary.csv"):
        return "aggregating: tables"
    return name


def _pages_of(size: str) -> int:
    """A tmpfs size such as "16k" or "1m", in KiB."""
    return int(size[:-1]) * {"k": 1, "m": 1024}[size[-1]]


def _pages(folder: Path) -> int:
    """KiB that a folder's files take on a tmpfs (whole 4 KiB pages)."""
    return sum(4 * -(-p.stat().st_size // 4096) for p in folder.rglob("*") if p.is_file())


def _quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


def mounting_permitted(work: Path) -> bool:
    """Whether this process may mount a tmpfs in a private mount namespace (root, unshare)."""
    if not shutil.which("unshare"):
        return False
    probe = Path(tempfile.mkdtemp(prefix="probe-", dir=work))
    try:
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                               f"mount -t tmpfs -o size=16k tmpfs {probe}"],
                              capture_output=True, timeout=30)
        return done.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


# ---------------------------------------------------------------- the schedule


def kill_schedule(n: int) -> list[Point]:
    """`n` SIGKILL points: the events of every kind of run first (marked running, first new
    cell, aggregating, report), then times spread evenly over each kind's duration."""
    kinds = list(KINDS)
    events = [Point(k, "KILL", e) for e in ("running", "cell:1", "aggregating", "report")
              for k in kinds]
    points = events[:min(len(events), n - n // 3)]
    rest = n - len(points)
    for k_i, kind in enumerate(kinds):
        m = len(range(k_i, rest, len(kinds)))
        points += [Point(kind, "KILL", round((j + 0.5) / m, 3)) for j in range(m)]
    return points


def signal_schedule(n: int) -> list[Point]:
    """`n` SIGTERM/SIGINT points, alternating, over the phases: config loaded, model loading,
    first new cell, aggregating, plots, report, then times."""
    moments: list[float | str] = ["config", "loading", "cell:1", "aggregating", "plots", "report"]
    moments += [round((j + 0.5) / max(n - 6, 1), 3) for j in range(max(n - 6, 0))]
    kinds = list(KINDS)
    return [Point(kinds[i % len(kinds)], ("TERM", "INT")[i % 2], moments[i]) for i in range(n)]


def print_table(rows: list[Outcome]) -> None:
    w = max(len(r.point) for r in rows) + 2
    print(f"{'point':<{w}}{'phase killed in':<32}{'exit':>6}  {'manifest':<12}"
          f"{'resumed ok':<12}equal")
    for r in rows:
        print(f"{r.point:<{w}}{r.phase:<32}{r.rc!s:>6}  {r.status or '-':<12}"
              f"{_yes(r.resumed):<12}{_yes(r.equal)}")
        for problem in r.problems:
            print(f"    ! {problem}")


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else "yes" if flag else "NO"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--points", type=int, default=20, help="SIGKILL points (>= 20 for the "
                    "issue's count)")
    ap.add_argument("--signals", type=int, default=6, help="SIGTERM/SIGINT points")
    ap.add_argument("--disk", action="store_true", help="also the read-only and full disks")
    ap.add_argument("--keep", help="scratch folder to use and keep (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="kill-bench-"))
    h = Harness(work, env={"STEER_CACHE": os.environ.get("STEER_CACHE",
                                                         str(work / "cache"))})
    t0 = time.perf_counter()
    for kind in KINDS:
        h.reference(kind)
    print("uninterrupted: " + ", ".join(f"{k} {s:.1f} s" for k, s in h.durations.items()),
          flush=True)
    rows: list[Outcome] = []
    points = kill_schedule(args.points) + signal_schedule(args.signals)
    for i, point in enumerate(points):
        rows.append(h.run_point(point, i))
        r = rows[-1]
        print(f"[{i + 1}/{len(points)}] {r.point}: {r.phase}; "
              f"{'ok' if r.survived else 'PROBLEM'}", flush=True)
    disk: list[Outcome] = []
    if args.disk:
        if mounting_permitted(work):
            for size, ro, kind in [("0", True, "fresh"), ("0", True, "extend-scale"),
                                   ("8k", False, "fresh"), ("16k", False, "fresh"),
                                   ("64k", False, "fresh"), ("256k", False, "fresh"),
                                   ("+4k", False, "extend-seed"), ("+16k", False, "extend-scale"),
                                   ("+40k", False, "extend-seed"), ("+64k", False, "extend-seed")]:
                disk.append(h.disk_fault(size, readonly=ro, kind=kind))
        else:
            print("disk faults skipped: mounting a tmpfs is not permitted here")
    print()
    print_table(rows + disk)
    kills = [r for r in rows if r.point.split()[1] == "SIGKILL"]
    sigs = [r for r in rows if r.point.split()[1] != "SIGKILL"]
    summary = {
        "kill_points": len(kills), "kill_survived": sum(r.survived for r in kills),
        "signal_points": len(sigs), "signal_survived": sum(r.survived for r in sigs),
        "disk_faults": sum(r.rc != 0 for r in disk),
        "disk_survived": sum(r.survived and r.rc != 0 for r in disk),
        "seconds": round(time.perf_counter() - t0, 1),
        "uninterrupted_s": {k: round(v, 1) for k, v in h.durations.items()},
    }
    print(f"\nSIGKILL: {summary['kill_survived']} of {len(kills)} points survived with results "
          f"equal; SIGTERM/SIGINT: {summary['signal_survived']} of {len(sigs)}; disk faults: "
          f"{summary['disk_survived']} of {summary['disk_faults']} ({summary['seconds']} s)")
    out = ROOT / "benchmarks" / "results" / "kill.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "points": [asdict(r) for r in rows + disk]},
                              indent=1))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r.survived for r in rows + disk) else 1


if __name__ == "__main__":
    sys.exit(main())
