"""The `steer` command line: parses, calls the public API (`steer.*`), prints with rich.

Every expected problem ends with one line on stderr and no traceback: a usage error (unknown
command or option, missing argument, bad option value) prints the usage line, the help hint and
the error, exit code 2; a `SteerError` prints one line, exit code 2 for bad input (a config, a
file) and 1 for the rest. Set STEER_DEBUG=1 to see tracebacks.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Annotated

import typer

import steer

app = typer.Typer(add_completion=False, no_args_is_help=False, pretty_exceptions_enable=False,
                  help="Activation-steering experiments with emotion vectors.\n\n"
                       "Example: steer run configs/desperation.yaml")

SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="Override a config value: key.path=value (value parsed as YAML). Repeatable.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]


def _version(value: bool):
    if value:
        typer.echo(f"steer {steer.__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version and exit.")
        ] = False):
    """Activation-steering experiments with emotion vectors.

    Example: steer run configs/desperation.yaml"""


def _load(config: str, overrides: list[str] | None) -> steer.ExperimentConfig:
    from steer.progress import console

    cfg = steer.load_config(config, overrides)
    for key, value in cfg.overrides:
        console.print(f"[dim]--set[/] {key} = {value!r}", highlight=False)
    return cfg


@app.command()
def run(config: Annotated[str, typer.Argument(metavar="CONFIG", help="Experiment YAML file.")],
        set_: SetOpt = None,
        quiet: QuietOpt = False,
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
    Prints the run directory's path last. Exit 1 if cells failed, 130 if interrupted.

    Example: steer run configs/desperation.yaml --set seeds='[0]' --set steering.scales='[0, 0.1]'
    """
    from steer.progress import console

    if backend not in ("local", "ray"):
        raise steer.ConfigError("--backend", "", backend, "local or ray")
    overrides = list(set_ or [])
    if batch_size is not None:
        overrides.append(f"generation.batch_size={batch_size}")
    configs = _load(config, overrides).per_model()
    if run_dir and len(configs) > 1:
        raise steer.ConfigError("--run-dir", "", run_dir, "no --run-dir with several models")
    if dry_run:
        for sub in configs:
            _print_plan(sub, run_dir)
        return
    failed = 0
    for sub in configs:
        failed += _run_one(sub, quiet, backend, ray_address, workers, max_failures, run_dir)
    if failed:
        console.print(f"[bold red]{failed} cell(s) failed[/]; rerun the same command to retry "
                      "them", highlight=False)
        raise typer.Exit(1)


def _print_plan(cfg: steer.ExperimentConfig, run_dir):
    w = steer.plan_work(cfg, run_dir)
    typer.echo(f"{cfg.name} on {cfg.model.name}: {w.conditions} conditions "
               f"({w.computations} distinct computations), {w.seeds} seeds")
    typer.echo(f"  run directory: {w.run_dir}")
    if w.note:
        typer.echo(f"  {w.note}")
    typer.echo(f"  cells: {w.cells} in all, {w.done} done, {w.pending_cells} to run"
               + (f" ({w.failed_before} failed before)" if w.failed_before else ""))
    for task, n in w.by_task.items():
        typer.echo(f"    {task}: {n} to run")
    typer.echo(f"  work left: {w.pending_units} units, {w.pending_rows} forward rows, "
               f"{w.generated_rows} generations of up to {w.max_new_tokens_total} new "
               "tokens in all")
    if w.estimated_s is not None:
        typer.echo(f"  estimate: {w.estimated_s / 60:.1f} min at the last run's pace")


def _run_one(cfg, quiet, backend, ray_address, workers, max_failures, run_dir) -> int:
    from steer.progress import console
    from steer.results.report import terminal_tables

    w = steer.plan_work(cfg, run_dir)
    console.print(f"[bold]{cfg.name}[/]: {w.conditions} conditions, "
                  f"{w.samples} samples on {cfg.model.name}", highlight=False)
    result = steer.run(cfg, quiet=quiet, backend=backend, max_failures=max_failures,
                       run_dir=run_dir, ray_address=ray_address, workers=workers)
    cells = result.manifest.cells
    if cells.reused:
        console.print(f"reused {cells.reused} of {cells.total} cells from an earlier run",
                      highlight=False)
    if not quiet and not result.summary.empty:
        vectors = list(cfg.steering.vectors) if cfg.steering else []
        for table in terminal_tables(result.summary, result.effects, vectors):
            console.print(table)
        from steer.results.flags import terminal_flags
        from steer.results.tables import headline_metrics

        for table in terminal_flags(result, headline_metrics(result.summary, vectors)):
            console.print(table)
    failures = result.failures
    for f in failures[:10]:
        where = ("unsteered" if f["scale"] == 0
                 else f"{f['vector']} L{f['layer']} x{f['scale']}")
        console.print(f"[red]failed[/] {f['task']} {where} seed {f['seed']}: {f['error']}",
                      highlight=False, soft_wrap=True)
    if len(failures) > 10:
        console.print(f"... and {len(failures) - 10} more (see {result.path}/failures/)",
                      highlight=False)
    if result.manifest.stopped_early:
        console.print("[red]stopped early[/]: --max-failures reached", highlight=False)
    typer.echo(str(result.path))
    return cells.failed or int(result.manifest.stopped_early)


@app.command()
def validate(config: Annotated[str, typer.Argument(metavar="CONFIG", help="Experiment YAML file.")],
             set_: SetOpt = None):
    """Check a config without loading a model; print it resolved and count its conditions.

    Example: steer validate configs/desperation.yaml --set steering.layers='[8, 12]'
    """
    cfg = _load(config, set_)
    typer.echo(cfg.to_yaml().rstrip())
    for sub in cfg.per_model():
        w = steer.plan_work(sub)
        typer.echo(f"# {sub.name}: {w.conditions} conditions ({w.computations} distinct "
                   f"computations) x {w.items} prompts x {w.seeds} seeds = {w.samples} samples")


@app.command()
def calibrate(config: Annotated[str, typer.Argument(metavar="CONFIG",
                                                    help="Experiment YAML file.")],
              layers: Annotated[str | None, typer.Option(
                  help="Candidate layers, comma-separated (default: the config's "
                  "steering.layers).")] = None,
              scales: Annotated[str | None, typer.Option(
                  help="Candidate scale magnitudes, comma-separated; both signs are tried "
                  "(default: 0.05,0.1,0.15,0.2,0.3,0.4,0.6).")] = None,
              prompts: Annotated[int | None, typer.Option(
                  help="How many built-in calibration prompts to reply to (1-16, default 8)."
              )] = None,
              set_: SetOpt = None,
              quiet: QuietOpt = False):
    """Find the layer and the largest steering scale at which replies stay fluent: the
    config's vectors and a random control at each candidate layer x scale, against the
    unsteered model. Writes calibration.csv, .json and .png into
    <output_dir>/<name>/calibration/ and prints that folder last.

    Example: steer calibrate configs/desperation.yaml --layers 8,12,16 --scales 0.05,0.1,0.2
    """
    import time

    from steer.progress import console
    from steer.sweep.autoscale import calibrate_into_run_dir, parse_numbers

    t0 = time.perf_counter()
    grid = {"layers": parse_numbers(layers, "--layers", int) if layers is not None else None,
            "scales": parse_numbers(scales, "--scales", float) if scales is not None else None,
            "n_prompts": prompts}
    for cfg in _load(config, set_).per_model():
        cal, folder = calibrate_into_run_dir(cfg, quiet=quiet, **grid)
        console.print(_calibration_table(cal.table))
        rec = cal.recommendation
        if rec["layer"] is None:
            console.print(f"[bold red]no recommendation[/]: {rec.get('note', '')}",
                          highlight=False)
        else:
            shifts = ", ".join(f"{v} {x:+.3f}" for v, x in rec["readout_shift_per_unit"].items())
            console.print(f"[bold]recommended[/]: layer {rec['layer']}, scale up to "
                          f"+-{rec['scale']:g} (read-out shift per unit of scale at layer "
                          f"{rec['readout_layer']}: {shifts})", highlight=False)
            if rec.get("note"):
                console.print(f"note: {rec['note']}", highlight=False)
        console.print(f"rule: {rec['rule']}", highlight=False, style="dim")
        console.print(f"took {time.perf_counter() - t0:.0f} s", highlight=False)
        typer.echo(str(folder))


@app.command()
def runs(folder: Annotated[str, typer.Argument(
             metavar="FOLDER", help="Where the runs are (a config's output_dir).")] = "runs",
         json_: Annotated[bool, typer.Option("--json", help="One JSON list of runs on stdout, "
                                             "for scripts.")] = False):
    """The run directories in FOLDER, newest first: name, model, status, cells done/failed,
    wall time and the strongest effect called real.

    Example: steer runs runs --json
    """
    table = steer.list_runs(folder)
    if json_:
        typer.echo(table.to_json(orient="records"))
        return
    if table.empty:
        typer.echo(f"no run directories in {folder}")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table

    out = Table(title=f"runs in {folder}, newest first", box=box.SIMPLE_HEAD, pad_edge=False,
                padding=(0, 1), collapse_padding=True)
    for name in ("run", "model", "status", "cells", "wall"):  # whole, so they can be read
        out.add_column(name, no_wrap=True)
    out.add_column("strongest effect", ratio=1)
    for r in table.itertuples(index=False):
        cells = "" if r.cells is None or r.cells != r.cells else (
            f"{int(r.done)}/{int(r.cells)}" + (f", {int(r.failed)} failed" if r.failed else ""))
        wall = "" if r.wall_s is None or r.wall_s != r.wall_s else f"{r.wall_s:.0f} s"
        out.add_row(r.name, str(r.model or ""), r.status, cells, wall, r.headline)
    Console().print(out)  # stdout: the listing is the output


def _calibration_table(table):
    from rich.table import Table

    out = Table("layer", "scale", "vector", "ppl x", "rep.", "random rep.", "shift/unit",
                "fluent", title="calibration (full reasons in calibration.csv)")
    for r in table.itertuples(index=False):
        shift = "" if r.readout_shift_per_unit != r.readout_shift_per_unit \
            else f"{r.readout_shift_per_unit:+.3f}"
        why = [w for w, word in (("ppl", "perplexity"), ("rep.", "repetition"),
                                 ("non-finite", "non-finite")) if word in str(r.reason)]
        out.add_row(str(r.layer), f"{r.scale:+g}", r.vector, f"{r.ppl_ratio:.2f}",
                    f"{r.repetition:.3f}", f"{r.random_repetition:.3f}", shift,
                    "yes" if r.fluent else f"[red]no[/] ({', '.join(why)})")
    return out


def _register_subcommands():
    from steer.cli.texts import corpus_app, monitor, readout
    from steer.cli.vectors import vectors_app

    app.add_typer(vectors_app, name="vectors")
    app.add_typer(corpus_app, name="corpus")
    app.command("readout")(readout)
    app.command("monitor")(monitor)


_register_subcommands()


INTERRUPTED = "interrupted: finished cells are saved; rerun the same command to finish"


def main(argv: list[str] | None = None):
    """The console script: run the app and turn every expected error into one line."""
    from typer.exceptions import Abort, Exit, TyperException

    debug = os.environ.get("STEER_DEBUG") == "1"
    # SIGTERM (a scheduler, `kill`, a container stopping) ends any command as Ctrl-C does: one
    # line and exit 130, with the run's manifest updated, never the default action's silent death.
    if signal.getsignal(signal.SIGTERM) != signal.SIG_IGN:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        # Without standalone mode, click returns an exit code rather than exiting (typer turns
        # Ctrl-C into exit code 130 this way) and raises its usage errors to us.
        rc = _command()(args=argv, prog_name="steer", standalone_mode=False)
        if rc == 130:
            _fail(INTERRUPTED, 130)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except steer.SteerError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code)
    except Exit as e:
        sys.exit(e.exit_code)
    except (KeyboardInterrupt, Abort):
        _fail(INTERRUPTED, 130)
    except TyperException as e:  # typer's own copy of click's usage errors
        if debug:
            raise
        _usage_error(e)


@functools.cache
def _command():
    """The click command typer builds from `app`, built once: building it walks every
    command's signature (~50 ms), which `app(...)` would do again on each call in a process."""
    return typer.main.get_command(app)


def _usage_error(e) -> None:
    """Usage line, help hint and the error on one line, exit 2 (as click prints it, without
    the boxes)."""
    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        print(ctx.get_usage(), file=sys.stderr)
        print(f"Try '{ctx.command_path} --help' for help.", file=sys.stderr)
    message = " ".join(e.format_message().split())
    _fail(message, getattr(e, "exit_code", 2) or 2)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _fail(message: str, code: int):
    from steer.progress import console

    if code == 130:  # a second Ctrl-C or SIGTERM must not cut the last line into a traceback
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    sys.exit(code)


if __name__ == "__main__":
    main()
