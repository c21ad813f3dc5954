"""`steer runs`: the run directories in a folder, newest first, as a table or as JSON."""

import json
import time

import steer
from tests.conftest import steer_cli


def _smoke(out, name, extra=()):
    cfg = steer.load_config("configs/smoke.yaml",
                            overrides=[f"output_dir={out}", "seeds=[0]", f"name={name}", *extra])
    return steer.run(cfg, quiet=True)


def test_steer_runs_json_lists_every_run_newest_first_and_says_what_it_cannot_read(tmp_path):
    first = _smoke(tmp_path, "first")
    time.sleep(1.1)  # manifest times a second apart
    second = _smoke(tmp_path, "second", ["steering.scales=[0.0, 0.5]"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    (tmp_path / "not-a-run").mkdir()  # no manifest: not listed
    res = steer_cli("runs", tmp_path, "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)
    names = [r["name"] for r in rows]
    assert names.index("second") < names.index("first") and "not-a-run" not in names
    assert set(names) == {"first", "second", "broken"}
    by = {r["name"]: r for r in rows}
    for run in (first, second):
        r = by[run.path.name]
        m = run.manifest
        assert (r["status"], r["model"], r["cells"], r["done"], r["failed"]) == (
            "complete", "tiny-random", m.cells.total, m.cells.total, 0)
        assert r["wall_s"] == m.timings_s["total"] and r["path"] == str(run.path)
        tested = int(run.effects.verdict.isin(["effect", "no effect"]).sum())
        assert r["headline"] == f"no effect called real ({tested} rows tested)"
    assert by["second"]["headline"] != "" and by["second"]["cells"] < by["first"]["cells"]
    assert by["broken"]["status"] == "unreadable" and "manifest.json" in by["broken"]["headline"]
    table = steer_cli("runs", tmp_path)
    assert table.returncode == 0 and "second" in table.stdout and "unreadable" in table.stdout


def test_steer_runs_on_a_missing_or_empty_folder(tmp_path):
    res = steer_cli("runs", tmp_path / "nowhere")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "nowhere" in res.stderr
    empty = steer_cli("runs", tmp_path, "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
    assert "no run directories" in steer_cli("runs", tmp_path).stdout
