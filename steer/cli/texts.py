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
            out: Annotated[Path, typer.Option(help="Parquet (or .csv) file to write.")],
            layer: Annotated[int | None, typer.Option(help="Read-out layer.")] = None,
            emotions: Annotated[str | None, typer.Option(
                help="Comma-separated emotions (default: all).")] = None,
            model: ModelOpt = EMBEDDED, corpus: CorpusOpt = "builtin",
            neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
            device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Score texts: one row per text, in input order, one column per emotion.

    Example: steer readout texts.jsonl --out scores.parquet --layer 16
    """
    from steer.io import write_frame
    from steer.progress import console
    from steer.vectors.readout import check_layer, read_texts

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
    from steer.io import save_figure, write_frame
    from steer.progress import console
    from steer.results.plots import trace_heatmap
    from steer.vectors.readout import check_layer, transcript

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
    from steer.progress import console
    from steer.vectors.writer import TOPICS, write_corpus

    m = load_model(model, device, dtype)
    counts = write_corpus(m, (emotions or "").split(","), TOPICS, per_pair, out, max_new_tokens,
                          temperature, batch_size)
    console.print(f"{counts['written']} stories -> {out} (dropped: "
                  f"{counts['named_emotion']} named their emotion, "
                  f"{counts['too_short']} too short)", highlight=False)
