"""First contact through the real `steer` executable: usage errors are the usage line, the help
hint and one error line, exit 2, never a traceback; --version; every command's help has an
example."""

import pytest

from .conftest import ROOT, steer_cli

SMOKE = str(ROOT / "configs" / "smoke.yaml")

USAGE_ERRORS = {
    "bare": [],
    "unknown-command": ["nosuchcommand"],
    "unknown-option": ["run", SMOKE, "--nosuchoption"],
    "missing-argument": ["run"],
    "zero-workers": ["run", SMOKE, "--workers", "0"],
    "not-a-number": ["run", SMOKE, "--max-failures", "many"],
    "bare-group": ["vectors"],
    "unknown-subcommand": ["vectors", "nosuch"],
    "missing-sub-argument": ["vectors", "show"],
    "unknown-sub-option": ["readout", "x.txt", "--out", "y.parquet", "--layr", "3"],
}


@pytest.mark.parametrize("case", USAGE_ERRORS, ids=list(USAGE_ERRORS))
def test_a_usage_error_is_one_line_and_the_usage_hint_exit_2(case):
    res = steer_cli(*USAGE_ERRORS[case])
    out = res.stdout + res.stderr
    assert res.returncode == 2, (case, res.returncode, out)
    assert "Traceback" not in out, out
    errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert lines[0].startswith("Usage: steer") and "--help" in lines[1], res.stderr
    assert len(lines) == 3, res.stderr  # usage, hint, the error
    assert not res.stdout.strip()


def test_bad_input_is_one_line_exit_2():
    for args in (["validate", "nope.yaml"], ["run", "nope.yaml"],
                 ["readout", "nope.txt", "--out", "x.parquet"]):
        res = steer_cli(*args)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr)
        assert len([x for x in res.stderr.splitlines() if x.strip()]) == 1, res.stderr


def test_version():
    import steer

    res = steer_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"steer {steer.__version__}"


COMMANDS = [[], ["run"], ["validate"], ["readout"], ["monitor"], ["vectors"],
            ["vectors", "build"], ["vectors", "list"], ["vectors", "show"],
            ["vectors", "export"], ["vectors", "import"], ["vectors", "inspect"], ["corpus"],
            ["corpus", "generate"]]


def test_every_command_help_has_an_example():
    from typer.testing import CliRunner

    from steer.cli.main import app

    runner = CliRunner()
    for cmd in COMMANDS:
        res = runner.invoke(app, [*cmd, "--help"], env={"COLUMNS": "200"})
        assert res.exit_code == 0, (cmd, res.output)
        assert "Example: steer" in res.output, (cmd, res.output)


# ---------------------------------------------------------------- first contact (issue 13)


def _one_error_line(res, *words, progress=False):
    """Exit 2, no traceback, one `error:` line holding `words` (with `progress`, the error is
    the last line and may follow progress lines; else it is the only line)."""
    out = res.stdout + res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip()]
    assert res.returncode == 2, (res.returncode, out)
    assert "Traceback" not in out, out
    assert len([x for x in lines if x.startswith("error:")]) == 1, res.stderr
    assert lines[-1].startswith("error: ") and (progress or len(lines) == 1), res.stderr
    for w in words:
        assert w in lines[-1], (w, lines[-1])


def test_bad_input_to_every_subcommand_exits_2_before_any_work(tmp_path):
    """Each fails before a model loads: one line naming the file or option, nothing written."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    (tmp_path / "texts.txt").write_text("I am so stressed.\n")
    (tmp_path / "afile").write_text("x")
    cases = [
        (["readout", "texts.txt", "--out", "scores.txt"], "scores.txt"),
        (["readout", "texts.txt", "--out", "afile/x.parquet"], "afile"),
        (["readout", "texts.txt", "--out", "/proc/steer-nowhere/x.csv"], "/proc"),
        (["readout", "missing.txt", "--out", "x.parquet"], "missing.txt"),
        (["monitor", "missing.jsonl"], "missing.jsonl: no such file"),
        (["monitor", "some text", "--out", "afile/trace.png"], "afile"),
        (["monitor", "some text", "--out", "trace.txt"], "trace.txt"),
        (["vectors", "build", "--device", "tpu"], "--device"),
        (["vectors", "build", "--model", "/nowhere/model"], "--model"),
        (["vectors", "import", "missing.gguf", "--out", "x.safetensors"], "missing.gguf"),
        (["vectors", "import", "texts.txt", "--out", "x.txt"], "x.txt"),
        (["vectors", "export", "x.safetensors", "--model", "no-such-model"], "no-such-model"),
        (["vectors", "inspect", "--out", "afile"], "afile"),
        (["corpus", "generate", "--out", "stories.txt"], "stories.txt"),
    ]
    def one(case):
        t = time.perf_counter()
        res = steer_cli(*case[0], cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
        return case, res, time.perf_counter() - t

    with ThreadPoolExecutor(max_workers=4) as pool:
        for (args, word), res, seconds in pool.map(one, cases):
            _one_error_line(res, word)
            assert seconds < 60, args  # no model was loaded (each takes ~2 s alone)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "texts.txt"]


def test_an_unknown_model_name_is_answered_in_seconds(tmp_path):
    import time

    for env in ({"HF_HUB_OFFLINE": "1"}, {"HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path)}):
        t = time.perf_counter()
        res = steer_cli("validate", SMOKE, "--set", "model.name=org/not-a-model-3141", env=env)
        _one_error_line(res, "model.name", "org/not-a-model-3141")
        assert time.perf_counter() - t < 15, env  # was 27-45 s of retries


def test_an_empty_prompts_file_does_not_run(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: e\nmodel: {{name: tiny-random}}\noutput_dir: {tmp_path / 'runs'}\n"
                   "tasks: [{name: a, prompts_file: empty.txt}]\n")
    for cmd in ("validate", "run"):
        _one_error_line(steer_cli(cmd, cfg), "tasks[0].prompts_file", "empty.txt")
    assert not (tmp_path / "runs").exists()


def test_the_readme_export_import_workflow_runs_as_written(tmp_path):
    """README: `vectors export X.gguf --vector "desperate - calm" --layers ...`, then `vectors
    import X.gguf --out dc.safetensors`, then `vectors.file: dc.safetensors` (on tiny-random,
    4 layers). A layer the control vector lacks is zero there: refused once, before any cell."""
    tiny = ["--model", "tiny-random"]
    res = steer_cli("vectors", "export", "desperate.gguf", "--vector", "desperate - calm",
                    "--layers", "1-3", *tiny, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    res = steer_cli("vectors", "import", "desperate.gguf", "--out", "dc.safetensors",
                    cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: w\nmodel: {{name: tiny-random}}\nvectors: {{file: dc.safetensors}}\n"
                   "steering: {vectors: [desperate], layers: [2], scales: [0.0, 0.1],"
                   " random_controls: 0}\nreadout: {layer: 2}\n"
                   f"tasks: [{{name: a, prompts: [hi]}}]\ngeneration: {{max_new_tokens: 2}}\n"
                   f"metrics: [readout]\noutput_dir: {tmp_path / 'runs'}\n")
    res = steer_cli("validate", cfg)
    assert res.returncode == 0, res.stderr
    cfg.write_text(cfg.read_text().replace("layers: [2]", "layers: [0]"))
    res = steer_cli("run", cfg, "--quiet")
    _one_error_line(res, "'desperate' is zero at layer 0", progress=True)
    assert not list((tmp_path / "runs").rglob("cells/*.json"))  # no cell ran, none failed
    assert not list((tmp_path / "runs").rglob("failures/*.json"))
