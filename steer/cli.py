"""The `steer` command line: parses, calls library functions, prints with rich.

Expected problems (a bad config, a missing model, a malformed corpus) end with one line on
stderr and no traceback: exit code 2 for configuration errors, 1 for the rest. Set STEER_DEBUG=1
to see the traceback.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from steer.config import ConfigError, load_config, to_yaml

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Activation-steering experiments with emotion vectors.")

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config value: key.path=value (value parsed as YAML). Repeatable.")]


def _err(message: str, code: int):
    from steer.progress import console

    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _load(config: str, overrides: list[str] | None):
    from steer.progress import console

    cfg, applied = load_config(config, overrides)
    for key, value in applied:
        console.print(f"[dim]--set[/] {key} = {value!r}", highlight=False)
    return cfg


@app.command()
def run(config: Annotated[str, typer.Argument(help="Experiment YAML file.")],
        set_: SetOpt = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False):
    """Run an experiment and write one run directory; prints its path."""
    from steer.plan import make_plan
    from steer.progress import console
    from steer.report import (
        effects_table,
        headline_metrics,
        is_behaviour,
        summary_table,
        trends_table,
    )
    from steer.runner import run_experiment

    cfg = _load(config, set_)
    plan = make_plan(cfg, config)
    console.print(f"[bold]{cfg.name}[/]: {len(plan.conditions)} conditions, "
                  f"{plan.n_samples} samples on {cfg.model.name}", highlight=False)
    run_dir = run_experiment(cfg, config, quiet=quiet)
    if not quiet:
        import pandas as pd

        summary = pd.read_csv(run_dir.path / "summary.csv")
        vecs = list(cfg.steering.vectors) if cfg.steering else []
        console.print(summary_table(summary, vecs))
        if cfg.steering:
            console.print(trends_table(summary, vecs))
            eff_path = run_dir.path / "effects.csv"
            beh = [m for m in headline_metrics(summary, vecs) if is_behaviour(m)]
            if eff_path.exists() and beh:
                console.print(effects_table(pd.read_csv(eff_path), beh))
    typer.echo(str(run_dir.path))


@app.command()
def validate(config: Annotated[str, typer.Argument(help="Experiment YAML file.")],
             set_: SetOpt = None):
    """Check a config without loading a model; print it resolved and count its conditions."""
    from steer.plan import make_plan

    cfg = _load(config, set_)
    plan = make_plan(cfg, config)
    typer.echo(to_yaml(cfg).rstrip())
    n_items = sum(len(p) for p in plan.prompts.values())
    typer.echo(f"# {len(plan.conditions)} conditions ({len(plan.unique_conditions)} distinct "
               f"computations) x {n_items} prompts x {len(plan.seeds)} seeds "
               f"= {plan.n_samples} samples")


def _register_subcommands():
    from steer.cli_vectors import corpus_app, monitor, readout, vectors_app

    app.add_typer(vectors_app, name="vectors")
    app.add_typer(corpus_app, name="corpus")
    app.command("readout")(readout)
    app.command("monitor")(monitor)


_register_subcommands()


def main():
    from steer.errors import SteerError

    debug = os.environ.get("STEER_DEBUG") == "1"
    try:
        app(standalone_mode=False)
    except ConfigError as e:
        if debug:
            raise
        _safe_exit(str(e), 2)
    except SteerError as e:
        if debug:
            raise
        _safe_exit(str(e), 1)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        _safe_exit("interrupted", 130)
    except Exception as e:  # click's own usage errors
        import click

        if isinstance(e, click.exceptions.ClickException):
            e.show()
            sys.exit(e.exit_code)
        if isinstance(e, click.exceptions.Abort):
            sys.exit(130)
        raise


def _safe_exit(message: str, code: int):
    try:
        _err(message, code)
    except typer.Exit as e:
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
