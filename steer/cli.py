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
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Print the plan (cells, how many are done, the work left); "
            "load nothing, run nothing.")] = False,
        backend: Annotated[str, typer.Option(
            help="local: this process. ray: a Ray cluster (--ray-address, or a local one).")
        ] = "local",
        ray_address: Annotated[str | None, typer.Option(
            help="Ray cluster to join (e.g. auto, or ray://head:10001); default: start one here."
        )] = None,
        workers: Annotated[int | None, typer.Option(
            min=1, help="Ray workers (default: one per GPU, else 1).")] = None,
        batch_size: Annotated[str | None, typer.Option(
            help="Rows per forward pass: a number, or auto (largest that fits, backing off on "
            "out-of-memory). Overrides generation.batch_size; does not change results' keys.")
        ] = None,
        max_failures: Annotated[int | None, typer.Option(
            min=1, help="Stop after this many failed cells (default: never stop early).")] = None,
        run_dir: Annotated[str | None, typer.Option(
            help="Run directory to write or finish (default: <output_dir>/<name>).")] = None):
    """Run an experiment, or finish one: cells already done in its run directory are reused.
    Prints the run directory's path. Exit 1 if cells failed, 130 if interrupted."""
    from steer.config import expand_models
    from steer.progress import console

    if backend not in ("local", "ray"):
        raise ConfigError("--backend", "", backend, "local or ray")
    overrides = list(set_ or [])
    if batch_size is not None:
        overrides.append(f"generation.batch_size={batch_size}")
    cfg = _load(config, overrides)
    configs = expand_models(cfg)
    if run_dir and len(configs) > 1:
        raise ConfigError("--run-dir", "", run_dir, "no --run-dir with several models")
    if dry_run:
        for sub in configs:
            _print_plan(sub, config, run_dir)
        return
    failed = 0
    for sub in configs:
        failed += _run_one(sub, config, quiet, backend, ray_address, workers, max_failures,
                           run_dir)
    if failed:
        console.print(f"[bold red]{failed} cell(s) failed[/]; rerun the same command to retry "
                      "them", highlight=False)
        raise typer.Exit(1)


def _print_plan(cfg, config, run_dir):
    from steer.runner import describe_work

    w = describe_work(cfg, config, run_dir)
    typer.echo(f"{cfg.name} on {cfg.model.name}: {w['conditions']} conditions "
               f"({w['computations']} distinct computations), {w['seeds']} seeds")
    typer.echo(f"  run directory: {w['run_dir']}")
    typer.echo(f"  cells: {w['cells']} in all, {w['done']} done, {w['pending_cells']} to run"
               + (f" ({w['failed_before']} failed before)" if w["failed_before"] else ""))
    for task, n in w["by_task"].items():
        typer.echo(f"    {task}: {n} to run")
    typer.echo(f"  work left: {w['pending_units']} units, {w['pending_rows']} forward rows, "
               f"{w['generated_rows']} generations of up to {w['max_new_tokens_total']} new "
               "tokens in all")
    if "estimated_s" in w:
        typer.echo(f"  estimate: {w['estimated_s'] / 60:.1f} min at the last run's pace")


def _run_one(cfg, config, quiet, backend, ray_address, workers, max_failures, run_dir) -> int:
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

    plan = make_plan(cfg, config)
    console.print(f"[bold]{cfg.name}[/]: {len(plan.conditions)} conditions, "
                  f"{plan.n_samples} samples on {cfg.model.name}", highlight=False)
    out = run_experiment(cfg, config, quiet=quiet, backend=backend, max_failures=max_failures,
                         run_dir=run_dir, ray_address=ray_address, workers=workers)
    if out.reused:
        console.print(f"reused {out.reused} of {out.n_cells} cells from an earlier run",
                      highlight=False)
    summary_path = out.run.path / "summary.csv"
    if not quiet and summary_path.is_file():
        import pandas as pd

        summary = pd.read_csv(summary_path)
        vecs = list(cfg.steering.vectors) if cfg.steering else []
        console.print(summary_table(summary, vecs))
        if cfg.steering:
            console.print(trends_table(summary, vecs))
            eff_path = out.run.path / "effects.csv"
            beh = [m for m in headline_metrics(summary, vecs) if is_behaviour(m)]
            if eff_path.exists() and beh:
                console.print(effects_table(pd.read_csv(eff_path), beh))
    for f in out.failures[:10]:
        where = "baseline" if f["vector"] is None else f"{f['vector']} L{f['layer']} x{f['scale']}"
        console.print(f"[red]failed[/] {f['task']} {where} seed {f['seed']}: {f['error']}",
                      highlight=False, soft_wrap=True)
    if len(out.failures) > 10:
        console.print(f"... and {len(out.failures) - 10} more (see {out.run.path}/failures/)",
                      highlight=False)
    if out.stopped_early:
        console.print("[red]stopped early[/]: --max-failures reached", highlight=False)
    typer.echo(str(out.run.path))
    return len(out.failures) or int(out.stopped_early)


@app.command()
def validate(config: Annotated[str, typer.Argument(help="Experiment YAML file.")],
             set_: SetOpt = None):
    """Check a config without loading a model; print it resolved and count its conditions."""
    from steer.config import expand_models
    from steer.plan import make_plan

    cfg = _load(config, set_)
    typer.echo(to_yaml(cfg).rstrip())
    for sub in expand_models(cfg):
        plan = make_plan(sub, config)
        n_items = sum(len(p) for p in plan.prompts.values())
        typer.echo(f"# {sub.name}: {len(plan.conditions)} conditions "
                   f"({len(plan.unique_conditions)} distinct computations) x {n_items} prompts "
                   f"x {len(plan.seeds)} seeds = {plan.n_samples} samples")


def _register_subcommands():
    from steer.cli_vectors import corpus_app, monitor, readout, vectors_app

    app.add_typer(vectors_app, name="vectors")
    app.add_typer(corpus_app, name="corpus")
    app.command("readout")(readout)
    app.command("monitor")(monitor)


_register_subcommands()


INTERRUPTED = "interrupted: finished cells are saved; rerun the same command to finish"


def main():
    from steer.errors import SteerError

    debug = os.environ.get("STEER_DEBUG") == "1"
    try:
        # Without standalone mode, click returns an exit code rather than exiting (typer turns
        # Ctrl-C into exit code 130 this way).
        rc = app(standalone_mode=False)
        if rc == 130:
            _safe_exit(INTERRUPTED, 130)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
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
        _safe_exit(INTERRUPTED, 130)
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
