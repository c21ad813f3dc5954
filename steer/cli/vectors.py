"""`steer vectors ...`: build, list, show, export, import and inspect emotion vectors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

import steer

vectors_app = typer.Typer(no_args_is_help=False, help="Build, list, show, export, import and "
                          "inspect emotion vectors.\n\nExample: steer vectors show desperate")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model name, folder or .gguf path.")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | mps")]
DtypeOpt = Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")]
CorpusOpt = Annotated[str, typer.Option(help="'builtin' or a stories JSONL file.")]
NeutralOpt = Annotated[str | None, typer.Option(help="Neutral dialogues JSONL (denoising).")]
OffsetOpt = Annotated[int, typer.Option(help="Average each story's tokens from this one on.")]
DenoiseOpt = Annotated[float, typer.Option(
    help="Share of neutral-text variance whose principal components are projected out (0: off).")]
EMBEDDED = "smollm2-135m-instruct"


DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def check_model_options(model: str, device: str, dtype: str) -> None:
    """Refuse a model that cannot be found, or an unknown device or dtype, as bad input (exit
    2) in a second or two, before anything loads: the checks a config's `model` gets."""
    from steer.errors import ConfigError, InputError
    from steer.sweep.checks import check_model_name

    for flag, value, allowed in (("--device", device, DEVICES), ("--dtype", dtype, DTYPES)):
        if value not in allowed:
            raise InputError(f"{flag}: got {value!r}, expected one of {', '.join(allowed)}")
    p = Path(model).expanduser()
    local = model.endswith(".gguf") or model.startswith(("/", "./", "../", "~")) or p.exists()
    try:
        check_model_name(str(p.absolute()) if local else model, "--model")
    except ConfigError as e:
        raise InputError(f"--model: got {model!r}, expected {e.expected}") from None


def load_model(model: str, device: str, dtype: str):
    """The model, checked first (check_model_options), with a spinner while it loads."""
    from steer.progress import console

    check_model_options(model, device, dtype)
    with console.status(f"loading {model}", spinner="dots"):
        return steer.load_model(model, device, dtype)


def load_vectors(m, corpus: str, neutral: str | None, token_offset: int, denoise: float,
                 rebuild: bool = False):
    return steer.emotion_vectors(m, corpus, neutral, token_offset=token_offset,
                                 denoise_variance=denoise, rebuild=rebuild)


@vectors_app.command("build")
def build(model: ModelOpt = EMBEDDED, corpus: CorpusOpt = "builtin",
          neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
          device: DeviceOpt = "auto", dtype: DtypeOpt = "auto",
          rebuild: Annotated[bool, typer.Option(help="Ignore the cache.")] = False):
    """Build vectors for every emotion in the corpus at every layer (cached).

    Example: steer vectors build --corpus mine.jsonl --neutral neutral.jsonl
    """
    from steer.progress import console

    ev = load_vectors(load_model(model, device, dtype), corpus, neutral, token_offset, denoise,
                      rebuild)
    console.print(f"{len(ev.names)} emotions x {ev.vectors.shape[1]} layers x "
                  f"{ev.vectors.shape[2]} dims; built in {ev.meta.get('build_seconds')} s; "
                  f"neutral components removed per layer: "
                  f"{ev.meta.get('neutral_components_removed')}", highlight=False)


@vectors_app.command("list")
def list_vectors():
    """List the vector sets in the cache.

    Example: steer vectors list
    """
    from rich.table import Table

    from steer.io import cache_dir
    from steer.progress import console
    from steer.vectors.store import cached_vector_sets

    table = Table(title=f"vector sets in {cache_dir() / 'vectors'}")
    for col in ("key", "model", "emotions", "layers", "corpus", "offset", "denoise", "built s"):
        table.add_column(col)
    for meta in cached_vector_sets():
        table.add_row(meta["key"], str(meta.get("model")), str(len(meta.get("names", []))),
                      str(meta.get("n_layers")), str(meta.get("corpus_hash")),
                      str(meta.get("token_offset")), str(meta.get("denoise_variance")),
                      str(meta.get("build_seconds")))
    console.print(table)


@vectors_app.command("show")
def show(emotion: Annotated[str, typer.Argument(help="Emotion id or alias.")],
         model: ModelOpt = EMBEDDED, corpus: CorpusOpt = "builtin",
         neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
         layer: Annotated[int | None, typer.Option(help="Layer for neighbours.")] = None,
         top: int = 8, device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """One vector: its norm per layer and its nearest emotions by cosine.

    Example: steer vectors show desperate --layer 16
    """
    from rich.table import Table

    from steer.progress import console
    from steer.vectors.inspect import vector_profile
    from steer.vectors.readout import check_layer

    m = load_model(model, device, dtype)
    ev = load_vectors(m, corpus, neutral, token_offset, denoise)
    p = vector_profile(m, ev, emotion, check_layer(m, layer), top)
    console.print(f"[bold]{p['name']}[/]: norm / median residual norm per layer: "
                  + " ".join(f"{x:.3f}" for x in p["relative_norms"]), highlight=False)
    table = Table(title=f"nearest to {p['name']} at layer {p['layer']} (cosine)")
    table.add_column("emotion")
    table.add_column("cosine", justify="right")
    for name, cos in p["neighbours"]:
        table.add_row(name, f"{cos:+.3f}")
    console.print(table)


@vectors_app.command("export")
def export(out: Annotated[Path, typer.Argument(help="A .safetensors or .gguf file to write.")],
           vector: Annotated[str | None, typer.Option(
               help="For .gguf: the direction to export, e.g. 'desperate' or 'calm - desperate'.")
           ] = None,
           layers: Annotated[str | None, typer.Option(
               help="For .gguf: layers, e.g. '10-20' or '12,14' (default: 1 to the last).")] = None,
           model: ModelOpt = EMBEDDED, corpus: CorpusOpt = "builtin",
           neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
           device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Export all vectors (.safetensors) or one direction as a llama.cpp control vector (.gguf).

    A .gguf holds unit direction x the layer's median residual norm per layer, so llama.cpp's
    `--control-vector-scaled FILE S` steers like `scale: S` here.

    Example: steer vectors export desperate.gguf --vector "desperate - calm" --layers 10-20
    """
    from steer.io import check_writable
    from steer.progress import console
    from steer.vectors.export import check_export, export_vectors

    check_export(out, vector)  # before loading anything
    check_writable(out, "OUT")
    m = load_model(model, device, dtype)
    export_vectors(m, load_vectors(m, corpus, neutral, token_offset, denoise), out, vector,
                   layers)
    console.print(f"wrote {out}", highlight=False)


@vectors_app.command("import")
def import_(source: Annotated[Path, typer.Argument(help="A .safetensors or .gguf file.")],
            out: Annotated[Path, typer.Option(help="steer vector file (.safetensors) to write.")],
            name: Annotated[str | None, typer.Option(
                help="For .gguf: the name to give the direction.")] = None):
    """Read vectors from a steer .safetensors file or a llama.cpp control vector and write them
    as a steer vector file (usable as `vectors.file` in a config).

    Example: steer vectors import desperate.gguf --out dc.safetensors
    """
    from steer.io import check_writable
    from steer.progress import console
    from steer.vectors.export import export_safetensors, import_vectors

    check_writable(out, "--out", (".safetensors",))
    ev = import_vectors(source, name)
    export_safetensors(ev, out)
    console.print(f"{len(ev.names)} vector(s) x {ev.vectors.shape[1]} layers -> {out}",
                  highlight=False)


@vectors_app.command("inspect")
def inspect(model: ModelOpt = EMBEDDED, corpus: CorpusOpt = "builtin",
            neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
            out: Annotated[Path, typer.Option(help="Folder for the map and inspect.json.")] =
            Path("runs/inspect"),
            show: Annotated[str, typer.Option(help="Emotions to detail (neighbours, logit "
                                              "lens).")] = "desperate,calm,afraid,happy,sad,angry",
            device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Validate vectors per layer: held-out accuracy (leave one topic out), PCs against human
    valence/arousal ratings, neighbours, k-means clusters, logit lens, a labelled PCA map.

    Example: steer vectors inspect --out runs/inspect
    """
    from steer.io import check_writable
    from steer.progress import console
    from steer.vectors.corpus import load_corpus
    from steer.vectors.inspect import inspect_vectors

    check_writable(out, "--out", folder=True)
    m = load_model(model, device, dtype)
    ev = load_vectors(m, corpus, neutral, token_offset, denoise)
    rep = inspect_vectors(m, ev, load_corpus(corpus, neutral), token_offset, denoise,
                          [e.strip() for e in show.split(",") if e.strip()], out)
    console.print(_per_layer_table(rep["per_layer"], rep["recommended_layer"], len(ev.names)))
    best = rep["recommended_layer"]
    for p in rep["principal_components"]:
        console.print(f"layer {best} PC{p['pc']} ({p['share']:.0%}; r valence "
                      f"{p['r_valence']:+.2f}, arousal {p['r_arousal']:+.2f}): "
                      f"{', '.join(p['low'])} <-> {', '.join(p['high'])}", highlight=False)
    for e in rep["detail"]:
        plus, minus = rep["logit_lens"][e]
        console.print(f"[bold]{e}[/] neighbours: {', '.join(rep['neighbours'][e])}; "
                      f"logit lens +: {' '.join(plus)} | -: {' '.join(minus)}", highlight=False)
    for c, names in rep["clusters"].items():
        console.print(f"cluster {c}: {', '.join(names)}", highlight=False)
    console.print(f"recommended layer: {best} (highest held-out top-5); wrote {out}",
                  highlight=False)


def _per_layer_table(per_layer, best: int, n: int):
    import math

    from rich.table import Table

    table = Table(title=f"per layer ({n} emotions; chance top-1 {1 / n:.1%}, top-5 {5 / n:.1%})")
    cols = ["layer", "top1", "top5", "pc1_valence", "pc2_arousal"]
    for col in cols + ["valence on", "arousal on"]:
        table.add_column(col, justify="right")

    def best_pc(r, dim):  # which of the first 3 PCs tracks a rating best, and its |r|
        vals = [getattr(r, f"pc{j}_{dim}", math.nan) for j in (1, 2, 3)]
        if all(v != v for v in vals):
            return "-"
        j = max(range(3), key=lambda k: -1.0 if vals[k] != vals[k] else vals[k])
        return f"PC{j + 1} {vals[j]:.2f}"

    for r in per_layer.itertuples():
        mark = " *" if r.layer == best else ""
        table.add_row(f"{r.layer}{mark}", f"{r.top1:.1%}", f"{r.top5:.1%}",
                      *[f"{getattr(r, c, math.nan):.2f}" for c in cols[3:]],
                      best_pc(r, "valence"), best_pc(r, "arousal"))
    return table
