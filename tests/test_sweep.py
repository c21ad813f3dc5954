"""Sweeps: hash-keyed cells, resume after SIGKILL/SIGTERM, failure isolation, batch-size back-off,
grids over models, and the Ray backend on a real local cluster."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from steer.errors import RunLocked
from steer.lm.batching import BatchSizer
from steer.sweep.config import load_config
from steer.sweep.plan import cell_keys, make_plan, make_units
from steer.sweep.rundir import RunDir

from .conftest import ROOT, steer_cli

SWEEP = {
    "name": "sweep", "model": {"name": "tiny-random"},
    "steering": {"vectors": ["desperate", "calm"], "layers": [1, 2], "scales": [-0.2, 0.0, 0.2],
                 "random_controls": 1},
    "readout": {"layer": 3, "emotions": ["desperate", "calm"]},
    "tasks": [{"name": "stress", "prompts": ["The tests keep failing.", "The server is down.",
                                             "I have an exam tomorrow morning."]}],
    "generation": {"max_new_tokens": 6, "batch_size": 6},
    "seeds": [0, 1],
}


def _config(tmp_path: Path, out: str, **changes) -> Path:
    cfg = {**SWEEP, "output_dir": str(tmp_path / out), **changes}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _steer_exe() -> str:
    return shutil.which("steer", path=str(Path(sys.executable).parent)) or "steer"


def _cells(run: Path) -> int:
    return len(list((run / "cells").glob("*.json"))) if (run / "cells").is_dir() else 0


def _same_results(a: Path, b: Path) -> None:
    ra, rb = pd.read_parquet(a / "results.parquet"), pd.read_parquet(b / "results.parquet")
    pd.testing.assert_frame_equal(ra, rb, check_exact=True)
    sa = (a / "samples.jsonl").read_text().splitlines()
    sb = (b / "samples.jsonl").read_text().splitlines()
    assert sa == sb


def test_cell_keys_ignore_batch_size_and_follow_settings(tmp_path):
    path = _config(tmp_path, "k")
    cfg = load_config(path)
    keys = cell_keys(cfg, make_plan(cfg))
    cfg2 = load_config(path, ["generation.batch_size=2", "model.device=cpu"])
    assert cell_keys(cfg2, make_plan(cfg2)) == keys
    cfg3 = load_config(path, ["generation.max_new_tokens=7"])
    keys3 = cell_keys(cfg3, make_plan(cfg3))
    assert not set(keys3.values()) & set(keys.values())
    # adding a scale keeps the cells already there, adds new ones
    cfg4 = load_config(path, ["steering.scales=[-0.2, 0.0, 0.2, 0.4]"])
    keys4 = cell_keys(cfg4, make_plan(cfg4))
    assert set(keys.values()) < set(keys4.values())
    assert len(set(keys.values())) == len(keys)  # one key per cell
    # 1 baseline + 3 directions x 2 layers x 2 non-zero scales = 13 computations x 2 seeds
    assert len(keys) == 26
    units = make_units(cfg, make_plan(cfg))
    assert [len(u.cells) for u in units] == [2] * 6 + [1] + [2] * 6 + [1]  # 6 rows per batch


def test_rerun_finishes_only_what_is_missing_and_dry_run_says_so(tmp_path):
    path = _config(tmp_path, "r")
    dry = steer_cli("run", path, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "cells: 26 in all, 0 done, 26 to run" in dry.stdout
    res = steer_cli("run", path, "--set", "steering.scales=[-0.2, 0.0]", "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    run = Path(res.stdout.strip().splitlines()[-1])
    assert _cells(run) == 14  # 1 baseline + 6 at -0.2, x 2 seeds
    dry = steer_cli("run", path, "--dry-run")
    assert "cells: 26 in all, 14 done, 12 to run" in dry.stdout
    assert "estimate:" in dry.stdout  # the first run's pace is known now
    res = steer_cli("run", path, "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "reused 14 of 26 cells" in res.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["cells"] == {"total": 26, "reused": 14, "computed": 12, "failed": 0}
    assert [h["computed"] for h in manifest["history"]] == [14, 12]
    assert manifest["batch_size"]["used"] == 6


def test_sigkill_at_several_points_then_resume_equals_an_uninterrupted_run(tmp_path):
    whole = steer_cli("run", _config(tmp_path, "whole"), "-q")
    assert whole.returncode == 0, whole.stderr[-2000:]
    ref = Path(whole.stdout.strip().splitlines()[-1])

    path = _config(tmp_path, "killed")
    run = tmp_path / "killed" / "sweep"
    seen = []
    # kill before any cell is written, then after 1, 9 and 20 finished cells
    for target in (0, 1, 9, 20):
        proc = subprocess.Popen([_steer_exe(), "run", str(path), "-q"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        if target == 0:
            time.sleep(1.0)
        else:
            while _cells(run) < target and proc.poll() is None and time.time() < deadline:
                time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        seen.append(_cells(run))
        # every cell on disk is whole: it parses and holds its samples
        for p in (run / "cells").glob("*.json") if run.is_dir() else []:
            assert len(json.loads(p.read_text())["samples"]) == 3
    assert seen[0] < seen[1] <= seen[2] <= seen[3] < 26, seen
    res = steer_cli("run", path, "-q")
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"reused {seen[-1]} of 26 cells" in res.stderr
    assert _cells(run) == 26 and not list(run.rglob(".*.tmp"))
    _same_results(run, ref)
    results = pd.read_parquet(run / "results.parquet")
    assert not results.duplicated(["task", "item", "vector", "layer", "scale", "seed",
                                   "metric"]).any()


def test_sigterm_stops_cleanly_keeps_finished_cells_and_exits_130(tmp_path):
    path = _config(tmp_path, "term")
    run = tmp_path / "term" / "sweep"
    proc = subprocess.Popen([_steer_exe(), "run", str(path), "-q"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while _cells(run) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted" in err and "Traceback" not in err
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    kept = _cells(run)
    assert 2 <= kept < 26
    res = steer_cli("run", path, "-q")
    assert res.returncode == 0 and f"reused {kept} of 26" in res.stderr


def test_a_failing_cell_is_recorded_and_the_others_go_on(tmp_path, monkeypatch, tiny):
    from typer.testing import CliRunner

    from steer.cli.main import app
    from steer.tasks.generate import GenerateSpec

    real = GenerateSpec.run

    def flaky(self, ctx, conditions, seed):
        if any(c.vector == "calm" and c.layer == 2 for c in conditions):
            raise RuntimeError("injected failure for calm at layer 2")
        return real(self, ctx, conditions, seed)

    monkeypatch.setattr(GenerateSpec, "run", flaky)
    monkeypatch.setattr("steer.lm.load.load_model", lambda *a, **k: tiny)
    path = _config(tmp_path, "fail")
    res = CliRunner().invoke(app, ["run", str(path), "-q"])
    assert res.exit_code == 1, res.output
    run = tmp_path / "fail" / "sweep"
    failures = [json.loads(p.read_text()) for p in (run / "failures").glob("*.json")]
    # calm at layer 2 (2 scales x 2 seeds) fails, and so do the cells batched with it
    assert {(f["vector"], f["layer"]) for f in failures} >= {("calm", 2)}
    assert all("injected failure" in f["error"] and "Traceback" in f["traceback"]
               for f in failures)
    done = _cells(run)
    assert done + len(failures) == 26 and done >= 18
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "incomplete" and manifest["cells"]["failed"] == len(failures)
    results = pd.read_parquet(run / "results.parquet")
    assert "calm" in set(results.vector) and len(results) > 0  # finished cells are reported
    # --max-failures stops early; then, with the fault gone, a rerun retries only those cells
    shutil.rmtree(tmp_path / "fail")
    res = CliRunner().invoke(app, ["run", str(path), "-q", "--max-failures", "1"])
    assert res.exit_code == 1 and "stopped early" in res.output
    assert _cells(run) < 26 - len(failures)
    monkeypatch.setattr(GenerateSpec, "run", real)
    res = CliRunner().invoke(app, ["run", str(path), "-q"])
    assert res.exit_code == 0, res.output
    assert _cells(run) == 26 and not list((run / "failures").glob("*.json"))


def test_batch_size_backs_off_on_out_of_memory():
    tried = []

    def fn(bs):
        tried.append(bs)
        if bs > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return bs

    sizer = BatchSizer(32)
    assert sizer.run(fn) == 4 and tried == [32, 16, 8, 4]
    assert sizer.record() == {"requested": 32, "initial": 32, "used": 4, "backoffs": 3}
    assert sizer.run(fn) == 4 and tried[-1] == 4  # later batches start from what worked
    with pytest.raises(ValueError):  # other errors are not retried
        BatchSizer(8).run(lambda bs: (_ for _ in ()).throw(ValueError("bad input")))
    never = BatchSizer(2)
    with pytest.raises(torch.OutOfMemoryError):
        never.run(lambda bs: (_ for _ in ()).throw(torch.OutOfMemoryError("out of memory")))
    assert BatchSizer("auto").size >= 1


def test_a_run_directory_has_one_writer(tmp_path):
    first = RunDir(tmp_path / "r")
    first.lock()
    with pytest.raises(RunLocked):
        RunDir(tmp_path / "r").lock()


def test_a_list_of_models_expands_into_one_run_per_model(tmp_path):
    path = _config(tmp_path, "models")
    res = steer_cli("run", path, "--set", "model.name=[tiny-random, smollm2-135m-instruct]",
                    "--set", "steering.layers=[1]", "--dry-run")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "sweep-tiny-random on tiny-random" in res.stdout
    assert "sweep-smollm2-135m-instruct on smollm2-135m-instruct" in res.stdout
    bad = steer_cli("run", path, "--set", "model.name=[tiny-random, no-such-model]", "--dry-run")
    assert bad.returncode == 2 and "model.name" in bad.stderr


@pytest.mark.timeout(900)
def test_ray_backend_on_a_local_cluster_matches_the_local_backend(tmp_path):
    pytest.importorskip("ray")
    # Two workers on two cores run one torch thread each; the local run uses one thread too, so
    # that both sum in the same order and must agree to the last bit.
    local = steer_cli("run", _config(tmp_path, "local"), "-q", env={"OMP_NUM_THREADS": "1"})
    assert local.returncode == 0, local.stderr[-2000:]
    res = steer_cli("run", _config(tmp_path, "ray"), "-q", "--backend", "ray", "--workers", "2",
                    env={"RAY_DISABLE_USAGE_STATS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    run = Path(res.stdout.strip().splitlines()[-1])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["backend"] == "ray" and manifest["cells"]["computed"] == 26
    assert len({w["pid"] for w in manifest["worker"]["workers"]}) == 2
    _same_results(run, Path(local.stdout.strip().splitlines()[-1]))
