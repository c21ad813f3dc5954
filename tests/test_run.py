"""`steer run` end to end on tiny-random: the run directory contract."""

import json

import numpy as np
import pandas as pd
import yaml

from steer.sweep.rundir import RESULT_COLUMNS, SUMMARY_COLUMNS

from .conftest import ROOT, steer_cli


def test_smoke_run_writes_the_whole_run_directory(tmp_path):
    res = steer_cli("run", ROOT / "configs" / "smoke.yaml", "--set", f"output_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / res.stdout.strip().splitlines()[-1].split("/")[-1]
    assert str(run) == res.stdout.strip().splitlines()[-1]
    for name in ("config.yaml", "manifest.json", "samples.jsonl", "results.parquet",
                 "summary.csv", "report.md"):
        assert (run / name).is_file(), name

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["output_dir"] == str(tmp_path)  # the override is in the resolved config
    manifest = json.loads((run / "manifest.json").read_text())
    for key in ("versions", "git_sha", "command", "model", "seeds", "timings_s"):
        assert key in manifest
    assert manifest["model"]["name"] == "tiny-random"
    assert len(manifest["model"]["fingerprint"]) == 16

    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    # 2 vectors + 2 random x 2 nonzero scales + 1 shared baseline = 9, x 8 prompts x 2 seeds
    assert len(samples) == manifest["n_samples"] == 144
    assert all(isinstance(s["text"], str) for s in samples)

    results = pd.read_parquet(run / "results.parquet")
    assert list(results.columns) == RESULT_COLUMNS
    metrics = set(results.metric)
    assert {"sentiment", "perplexity", "repetition", "readout.desperate", "readout.calm"} <= metrics
    # the baseline sample is reported under every vector at scale 0
    base = results[(results.scale == 0) & (results.metric == "sentiment")]
    assert set(base.vector) == {"desperate", "calm", "random-0", "random-1"}
    assert len(base) == 4 * 8 * 2

    summary = pd.read_csv(run / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert "random" in set(summary.vector)  # pooled random control
    ok = summary.dropna(subset=["mean"])
    assert ((ok.ci_low <= ok["mean"] + 1e-9) & (ok["mean"] <= ok.ci_high + 1e-9)).all()
    assert set(summary.n[summary.vector == "desperate"]) == {16}

    # random weights: nothing may be called an effect, with every steered metric tested
    eff = pd.read_csv(run / "effects.csv")
    counts = eff.verdict.value_counts().to_dict()
    n_metrics = results.metric.nunique()
    assert counts == {"no effect": 2 * n_metrics, "control": 3 * n_metrics}, counts
    assert (eff.m == 2 * n_metrics).all()
    assert "Bonferroni across the m = " in (run / "report.md").read_text()
    assert "no effect" in res.stderr and "beyond random" not in res.stderr

    plots = sorted(p.name for p in (run / "plots").glob("*.png"))
    assert "stress__sentiment.png" in plots and "stress__readout_desperate.png" in plots
    assert all((run / "plots" / p).stat().st_size > 5000 for p in plots)


def test_a_failed_run_says_why_in_one_line_and_in_its_manifest(tmp_path):
    # a model folder that passes the config checks but cannot be loaded: the run fails
    model = tmp_path / "broken-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')
    out = tmp_path / "runs"
    res = steer_cli("run", ROOT / "configs" / "smoke.yaml", "--set", f"output_dir={out}",
                    "--set", f"model.name={model}", env={"HF_HUB_OFFLINE": "1"})
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "broken-model" in errors[0]
    (run,) = list(out.iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "ModelLoadError" in manifest["error"]
    assert (run / "config.yaml").is_file() and not (run / "results.parquet").exists()


def test_readout_task_sweeps_a_template_without_steering(tmp_path):
    cfg = tmp_path / "dose.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "dose", "model": {"name": "tiny-random"}, "output_dir": str(tmp_path),
        "tasks": [{"name": "dose", "type": "readout",
                   "template": "I took {value} mg of it.", "values": [100, 1000, 10000]}],
        "readout": {"layer": 3, "emotions": ["afraid", "calm"]}, "metrics": ["readout"]}))
    res = steer_cli("run", cfg)
    assert res.returncode == 0, res.stderr[-2000:]
    run = tmp_path / res.stdout.strip().splitlines()[-1].split("/")[-1]
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    assert [s["value"] for s in samples] == [100, 1000, 10000]
    assert samples[2]["prompt"] == "I took 10000 mg of it."
    assert set(samples[0]["metrics"]) == {"readout.afraid", "readout.calm"}
    assert (run / "plots" / "dose__readout_by_value.png").is_file()
    assert "Spearman" in (run / "report.md").read_text()


def test_behaviour_tasks_run_end_to_end_through_the_cli(tmp_path):
    cfg = {
        "name": "beh", "model": {"name": "tiny-random"},
        "steering": {"vectors": ["desperate"], "layers": [2], "scales": [-0.5, 0.0, 0.5],
                     "random_controls": 1},
        "readout": {"emotions": ["desperate", "calm"]},
        "tasks": [{"name": "bm", "type": "choice", "suite": "blackmail", "limit": 4},
                  {"name": "prefs", "type": "preference", "limit": 6},
                  {"name": "code", "type": "code", "limit": 2, "attempts": 2,
                   "max_new_tokens": 12}],
        "generation": {"batch_size": 16}, "seeds": [0, 1], "metrics": ["readout"],
        "output_dir": str(tmp_path),
    }
    path = tmp_path / "beh.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = steer_cli("run", path)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / res.stdout.strip().splitlines()[-1].split("/")[-1]
    results = pd.read_parquet(run / "results.parquet")
    # choice: 4 items, one seed (deterministic), 5 distinct computations -> reported under
    # desperate and random-0 at three scales
    bm = results[(results.task == "bm") & (results.metric == "p_bm")]
    assert len(bm) == 4 * 6 and set(bm.seed) == {0}
    assert bm.value.between(0, 1).all()
    prefs = results[results.task == "prefs"]
    assert set(prefs.metric) == {"elo.positive", "elo.neutral", "elo.harmful"}
    # Elo is centred on 1000 within every condition
    means = prefs.groupby(["vector", "scale"]).value.mean()
    assert np.allclose(means, 1000)
    code = results[results.task == "code"]
    rates = code[code.metric.str.endswith("_rate")].pivot_table(
        index=["item", "seed", "vector", "scale"], columns="metric", values="value")
    assert np.allclose(rates.sum(axis=1), 1.0)  # every attempt gets exactly one class
    assert set(code.metric) >= {"hack_rate", "spec_pass", "attempts_used",
                                "attempt1.readout.desperate"}
    used = code[code.metric == "attempts_used"].value
    assert used.between(1, 2).all()
    samples = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines()]
    code_samples = [s for s in samples if s["task"] == "code"]
    assert all(len(s["attempts"]) == s["metrics"]["attempts_used"] for s in code_samples)
    eff = pd.read_csv(run / "effects.csv")
    assert {"p_bm", "hack_rate", "elo.positive"} <= set(eff.metric)
    assert {"slope", "slope_low", "slope_high", "p_top", "verdict", "m"} <= set(eff.columns)
    # 2 to 6 items per task, and on random weights the choice tasks follow the letter order
    comp = pd.read_csv(run / "competence.csv").set_index("task")
    tested = eff[eff.verdict != "control"]
    assert len(tested) and "effect" not in set(eff.verdict)
    for r in tested.itertuples():
        want = "task at chance" if bool(comp.at_chance.get(r.task, False)) else "too few items"
        assert r.verdict == want, (r.task, r.metric, r.verdict)
    assert (run / "elo_prefs.csv").is_file() and (run / "elo_readout_prefs.csv").is_file()
    report = (run / "report.md").read_text()
    assert "Behaviour: dose-response slopes" in report and "Preferences (prefs)" in report


def test_generation_decode_static_reaches_the_model(tmp_path):
    """`generation.decode: static` is applied to the loaded model (the manifest says so) and the
    sweep completes. (Token equality with the default path: tests/test_generate.py.)"""
    res = steer_cli("run", ROOT / "configs" / "smoke.yaml", "--set", f"output_dir={tmp_path}",
                    "--set", "generation.decode=static", "--quiet")
    assert res.returncode == 0, res.stderr[-3000:]
    run = next(tmp_path.iterdir())
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["model"]["kv_cache"] == "static"
    assert manifest["status"] == "complete" and manifest["n_samples"] == 144
