"""`steer readout`, `steer monitor` and `steer corpus generate`: vectors applied to texts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import steer
from steer.cli.vectors import (
    EMBEDDED,
    CorpusOpt,
    DenoiseOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    NeutralOpt,
    OffsetOpt,
    load_model,
    load_vectors,
)

corpus_app = typer.Typer(no_args_is_help=False, help="Story corpora for building vectors.\n\n"
                         "Example: steer corpus generate --out stories.jsonl")


def readout(file: Annotated[Path, typer.Argument(help="Texts: .jsonl, .csv/.tsv or plain lines.")],
            out: Annotated[Path, typer.Option(
                help="Table to write: .parquet, .csv or .jsonl (the name says the format).")],
            layer: Annotated[int | None, typer.Option(help="Read-out layer.")] = None,
            emotions: Annotated[str | None, typer.Option(
                help="Comma-separated emotions (default: all).")] = None,
            model: ModelOpt = EMBEDDED, corpus: CorpusOpt = "builtin",
            neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
            device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Score texts: one row per text, in input order, one column per emotion.

    Example: steer readout texts.jsonl --out scores.parquet --layer 16
    """
    from steer.io import FRAME_SUFFIXES, check_writable, write_frame
    from steer.progress import console
    from steer.vectors.readout import check_layer, read_texts

    check_writable(out, "--out", FRAME_SUFFIXES)  # before the work, not after it
    texts = read_texts(file)
    m = load_model(model, device, dtype)
    ev = load_vectors(m, corpus, neutral, token_offset, denoise)
    layer = check_layer(m, layer)
    df = steer.readout(m, ev, texts, layer,
                       [e.strip() for e in emotions.split(",")] if emotions else None)
    write_frame(df, out)
    console.print(f"{len(df)} texts x {df.shape[1]} emotions (layer {layer}) -> {out}",
                  highlight=False)


def monitor(source: Annotated[str, typer.Argument(
                help="Text to trace, or a file (plain text, or JSONL of chat messages with "
                     "'role' and 'content').")],
            out: Annotated[Path, typer.Option(help="Heatmap PNG; a CSV is written beside it.")
                           ] = Path("runs/monitor.png"),
            emotions: Annotated[str, typer.Option(help="Comma-separated emotions.")] =
            "desperate,calm,afraid,nervous,happy,sad,angry",
            layer: Annotated[int | None, typer.Option(help="Read-out layer.")] = None,
            model: ModelOpt = EMBEDDED, corpus: CorpusOpt = "builtin",
            neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
            device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Trace emotions token by token over a prompt or a transcript, as a heatmap and a CSV.

    Example: steer monitor chat.jsonl --out runs/trace.png --emotions desperate,calm
    """
    from steer.io import check_writable, save_figure, write_frame
    from steer.progress import console
    from steer.results.plots import trace_heatmap
    from steer.vectors.readout import check_layer, transcript

    check_source(source)
    check_writable(out, "--out", (".png",))
    check_writable(out.with_suffix(".csv"), "--out")
    m = load_model(model, device, dtype)
    text = transcript(m, source)
    ev = load_vectors(m, corpus, neutral, token_offset, denoise)
    layer = check_layer(m, layer)
    names = [e.strip() for e in emotions.split(",") if e.strip()]
    trace = steer.trace(m, ev, text, layer, names)
    write_frame(trace, out.with_suffix(".csv"))
    save_figure(trace_heatmap(trace, f"{m.name}, layer {layer}"), out)
    console.print(f"{len(trace)} tokens x {len(names)} emotions -> {out} and "
                  f"{out.with_suffix('.csv')}", highlight=False)


# What a file name given to `monitor` looks like: the text to trace is taken as text only when
# no file of that name exists and it does not look like one (so a typo is not traced as text).
_FILE_LIKE = (".jsonl", ".json", ".txt", ".md", ".csv", ".tsv", ".log")


def check_source(source: str) -> None:
    """Refuse a `monitor` source that names a file which is missing, a folder or unreadable,
    before the model loads; text with spaces or without a file-like ending is text."""
    from steer.errors import InputError
    from steer.io import read_text

    p = Path(source)
    looks_like_file = ("\n" not in source and " " not in source.strip()
                       and (p.suffix.lower() in _FILE_LIKE or "/" in source))
    try:
        is_dir, is_file = p.is_dir(), p.is_file()
    except (OSError, ValueError):  # too long for a file name, or a NUL in it: text
        return
    if is_dir:
        raise InputError(f"{source}: a folder, expected a text or JSONL file (or the text itself)")
    if is_file:
        read_text(p, "transcript")  # UTF-8, readable
    elif looks_like_file:
        raise InputError(f"{source}: no such file (to trace a text itself, pass text with "
                         "spaces, not a file name)")


@corpus_app.command("generate")
def corpus_generate(
        out: Annotated[Path, typer.Option(help="Stories JSONL to write.")],
        model: ModelOpt = EMBEDDED,
        emotions: Annotated[str | None, typer.Option(
            help="Comma-separated emotions (default: all in the catalog).")] = None,
        per_pair: Annotated[int, typer.Option(help="Stories per emotion x topic.")] = 1,
        max_new_tokens: int = 160, temperature: float = 0.8, batch_size: int = 32,
        device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Let the model write stories per emotion x topic (show, never name); the checker drops
    those that name their emotion; the rest go to a corpus file for `vectors build --corpus`.

    Example: steer corpus generate --out stories.jsonl --emotions desperate,calm --per-pair 2
    """
    from steer.io import check_writable
    from steer.progress import console
    from steer.vectors.writer import TOPICS, write_corpus

    check_writable(out, "--out", (".jsonl",))
    m = load_model(model, device, dtype)
    counts = write_corpus(m, (emotions or "").split(","), TOPICS, per_pair, out, max_new_tokens,
                          temperature, batch_size)
    console.print(f"{counts['written']} stories -> {out} (dropped: "
                  f"{counts['named_emotion']} named their emotion, "
                  f"{counts['too_short']} too short)", highlight=False)
