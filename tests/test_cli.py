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
