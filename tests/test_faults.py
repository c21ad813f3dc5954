"""Faults and signals: a real `steer run` killed (SIGKILL while extending a complete run, SIGTERM
while aggregating) through the kill benchmark's own harness, resumed and compared with an
uninterrupted run; read-only and full disks (real tmpfs mounts in a private namespace); an
unwritable output folder; a run directory that would escape `output_dir` or land in a folder that
is not a run directory; clean-up that touches only steer's own temporaries."""

import doctest
import importlib.util
import json
import os
import shutil
import signal
import sys
import time

import pytest

from steer.errors import RunDirError
from steer.sweep import run as run_module
from steer.sweep import rundir
from steer.sweep.rundir import RunDir

from .conftest import ROOT, steer_cli

_spec = importlib.util.spec_from_file_location("kill_bench", ROOT / "benchmarks" / "kill_bench.py")
kill_bench = importlib.util.module_from_spec(_spec)
sys.modules["kill_bench"] = kill_bench
_spec.loader.exec_module(kill_bench)

# Smaller than the benchmark's: 4 cells (1 unsteered + 1 steered, x 2 seeds); the benchmark's
# extension (scales -0.2 and 0.4 added) makes 8.
SMALL = {**kill_bench.CONFIG,
         "steering": {"vectors": ["desperate"], "layers": [2], "scales": [0.0, 0.2],
                      "random_controls": 0},
         "readout": {"layer": 3, "emotions": ["desperate"]},
         "generation": {"max_new_tokens": 2, "batch_size": 2}}


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    return kill_bench.Harness(tmp_path_factory.mktemp("faults"), config=SMALL)


def _assert_survived(res):
    assert res.problems == [], res
    assert res.resumed and res.equal, res


def test_sigkill_while_extending_a_complete_run_leaves_it_running_not_complete(harness):
    # The moment the extension marks the directory running, before its new cells: the old
    # manifest said "complete" here, with the added scale's cells missing.
    res = harness.run_point(kill_bench.Point("extend-scale", "KILL", "running"), 0)
    _assert_survived(res)
    assert res.rc == -signal.SIGKILL and res.status == "running"


def test_sigterm_while_aggregating_exits_130_and_says_interrupted(harness):
    res = harness.run_point(kill_bench.Point("fresh", "TERM", "aggregating"), 1)
    _assert_survived(res)
    assert res.rc == 130 and res.status == "interrupted"
    assert res.phase.startswith("aggregating"), res.phase


def test_a_cell_that_is_not_whole_is_computed_again_not_read(harness, tmp_path):
    ref = harness.reference("fresh")
    run = tmp_path / "out" / kill_bench.NAME
    shutil.copytree(ref, run)
    (bad,) = sorted(run.glob("cells/*.json"))[:1]
    bad.write_text(bad.read_text()[:40])  # a disk that filled up mid-copy, say
    proc = harness.start(tmp_path / "out", "fresh")
    assert proc.wait() == 0, proc.stderr[-2000:]
    assert f"notice: {bad}: not whole JSON; computing that cell again" in proc.err
    assert "Traceback" not in proc.stderr
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "complete" and m["cells"]["computed"] == 1
    assert kill_bench.compare_runs(run, ref) == []


@pytest.fixture(scope="module")
def mounts(harness):
    if not kill_bench.mounting_permitted(harness.work):
        pytest.skip("mounting a tmpfs in a private namespace is not permitted here")


def test_a_read_only_output_disk_is_one_line_exit_2_and_nothing_changes(harness, mounts):
    res = harness.disk_fault("0", readonly=True, kind="fresh", resume=False)
    assert res.problems == [], res
    assert res.rc == 2 and "Read-only file system" in res.point
    assert res.status is None  # nothing was written, no manifest at all


def test_a_full_disk_is_one_line_exit_1_then_the_run_resumes_equal(harness, mounts):
    res = harness.disk_fault("16k", kind="fresh")
    _assert_survived(res)
    assert res.rc == 1 and "No space left on device" in res.point
    assert res.status != "complete"


def test_an_output_dir_that_is_a_file_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("not a folder")
    res = steer_cli("run", ROOT / "configs" / "smoke.yaml", "--set", f"output_dir={blocker}")
    assert res.returncode == 2, res.stderr[-2000:]
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert errors == [f"error: cannot write to {blocker}/smoke: Not a directory"], res.stderr
    assert "Traceback" not in res.stderr and blocker.read_text() == "not a folder"


def test_a_run_dir_that_holds_other_things_is_refused_and_left_alone(tmp_path):
    other = tmp_path / "shared"
    other.mkdir()
    (other / ".their-work.123.tmp").write_text("theirs")
    (other / ".notes.txt.45.tmp").write_text("theirs too")
    res = steer_cli("run", ROOT / "configs" / "smoke.yaml", "--run-dir", other)
    assert res.returncode == 2, res.stderr[-2000:]
    assert f"error: {other}: exists and is not a steer run directory" in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in other.iterdir()) == [".notes.txt.45.tmp",
                                                       ".their-work.123.tmp"]


def test_the_run_directory_never_escapes_output_dir(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("..", "/", str(tmp_path), "a/../..", "."):
        with pytest.raises(RunDirError, match="expected a plain folder name"):
            RunDir.open(out, name)
    # a symlink inside output_dir that points elsewhere is refused too, through the CLI
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (out / "smoke").symlink_to(elsewhere)
    res = steer_cli("run", ROOT / "configs" / "smoke.yaml", "--set", f"output_dir={out}")
    assert res.returncode == 2, res.stderr[-2000:]
    (line,) = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert "name: got 'smoke', expected a plain folder name" in line and str(out) in line
    assert list(elsewhere.iterdir()) == []


def test_clean_up_removes_only_steers_own_temporaries(tmp_path):
    rd = RunDir(tmp_path / "r")
    rd.lock()
    ours = [rd.path / ".manifest.json.41.tmp",
            rd.path / "cells" / ".0123456789abcdef0123.json.9.tmp",
            rd.path / "plots" / ".stress__x.png.5.tmp"]
    theirs = [rd.path / ".their-editor.swp.tmp", rd.path / "plots" / ".notes.7.tmp",
              rd.path / "cells" / "deep" / ".0123456789abcdef0123.json.9.tmp"]
    (rd.path / "cells" / "deep").mkdir()
    for p in ours + theirs:
        p.write_text("x")
    assert rd.clean_temporaries() == 3
    assert [p.exists() for p in ours] == [False] * 3 and all(p.exists() for p in theirs)


def test_ledger_counts_cells_on_disk_and_marks_a_killed_session(tmp_path):
    """A manifest left `running` (its process SIGKILLed) is reconciled by the next session."""
    rd = RunDir(tmp_path / "r")
    rd.lock()
    rd.write_manifest({"status": "running", "history": [{"status": "running", "computed": 0}]})
    from steer.sweep.config import load_config
    from steer.sweep.plan import make_plan, make_units

    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["seeds=[0]"])
    plan = make_plan(cfg)
    units = make_units(cfg, plan)
    first = units[0].cells[0]
    rd.write_cell({"key": first.key, "samples": [{}]})
    book = run_module.Ledger(rd, cfg, plan, units, "local")
    assert book.history[-1]["status"] == "killed"
    second = units[-1].cells[-1]
    rd.write_cell({"key": second.key, "samples": [{}]})
    rd.write_failure(units[0].cells[-1].key, {"error": "x"})
    assert book.counts() == {"total": 9, "reused": 1, "computed": 1, "failed": 1}
    book.finish("interrupted", {})
    m = json.loads((rd.path / "manifest.json").read_text())
    assert m["status"] == "interrupted" and m["cells"] == book.counts()
    assert [h["status"] for h in m["history"]] == ["killed", "interrupted"]


def test_sigterm_held_back_while_the_manifest_is_written(tmp_path):
    """deferred_signals: a SIGTERM during the final write is delivered after it, not inside."""
    seen, before = [], signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with run_module.interrupts():
            with run_module.deferred_signals():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.05)
                seen.append("write finished")
            time.sleep(5)
    assert seen == ["write finished"]
    assert signal.getsignal(signal.SIGTERM) == before  # restored


@pytest.mark.parametrize("obj", [rundir.contained, RunDir.clean_temporaries,
                                 RunDir.set_aside_unsound_cells, run_module.interrupts])
def test_examples_of_the_fault_helpers_run(obj):
    globs = vars(sys.modules[obj.__module__])
    tests = doctest.DocTestFinder().find(obj, obj.__name__, globs=globs)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for t in tests:
        runner.run(t)
    assert tests and runner.failures == 0
