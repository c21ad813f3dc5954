"""`steer vectors ...` and `steer readout`: build, inspect, move and apply emotion vectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from steer.errors import SteerError, VectorError

vectors_app = typer.Typer(no_args_is_help=True, help="Build, list, show, export and import "
                          "emotion vectors.")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model name, folder or .gguf path.")]
DeviceOpt = Annotated[str, typer.Option(help="auto | cpu | cuda | mps")]
DtypeOpt = Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")]
CorpusOpt = Annotated[str, typer.Option(help="'builtin' or a stories JSONL file.")]
NeutralOpt = Annotated[str | None, typer.Option(help="Neutral dialogues JSONL (denoising).")]
OffsetOpt = Annotated[int, typer.Option(help="Average each story's tokens from this one on.")]
DenoiseOpt = Annotated[float, typer.Option(
    help="Share of neutral-text variance whose principal components are projected out (0: off).")]


def _model(model: str, device: str, dtype: str):
    from steer.model import load_model
    from steer.progress import console

    with console.status(f"loading {model}", spinner="dots"):
        return load_model(model, device, dtype)


def _vectors(m, corpus: str, neutral: str | None, token_offset: int, denoise: float,
             rebuild: bool = False):
    from steer.vectors.corpus import load_corpus
    from steer.vectors.store import vectors_for

    return vectors_for(m, load_corpus(corpus, neutral), token_offset, denoise, rebuild=rebuild)


def _layer(m, layer: int | None) -> int:
    """The asked-for layer, checked, or the model's default read-out layer."""
    layer = m.default_readout_layer if layer is None else layer
    if not 0 <= layer < m.n_layers:
        raise VectorError(f"layer {layer} is outside 0..{m.n_layers - 1}")
    return layer


@vectors_app.command("build")
def build(model: ModelOpt = "smollm2-135m-instruct", corpus: CorpusOpt = "builtin",
          neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
          device: DeviceOpt = "auto", dtype: DtypeOpt = "auto",
          rebuild: Annotated[bool, typer.Option(help="Ignore the cache.")] = False):
    """Build vectors for every emotion in the corpus at every layer (cached)."""
    from steer.progress import console

    m = _model(model, device, dtype)
    ev = _vectors(m, corpus, neutral, token_offset, denoise, rebuild)
    console.print(f"{len(ev.names)} emotions x {ev.vectors.shape[1]} layers x "
                  f"{ev.vectors.shape[2]} dims; built in {ev.meta.get('build_seconds')} s; "
                  f"neutral components removed per layer: "
                  f"{ev.meta.get('neutral_components_removed')}", highlight=False)


@vectors_app.command("list")
def list_vectors():
    """List the vector sets in the cache."""
    from rich.table import Table

    from steer.model import cache_dir
    from steer.progress import console

    table = Table(title=f"vector sets in {cache_dir() / 'vectors'}")
    for col in ("key", "model", "emotions", "layers", "corpus", "offset", "denoise", "built s"):
        table.add_column(col)
    for meta_path in sorted((cache_dir() / "vectors").glob("*/vectors.json")):
        meta = json.loads(meta_path.read_text())
        table.add_row(meta_path.parent.name, str(meta.get("model")), str(len(meta["names"])),
                      str(meta.get("n_layers")), str(meta.get("corpus_hash")),
                      str(meta.get("token_offset")), str(meta.get("denoise_variance")),
                      str(meta.get("build_seconds")))
    console.print(table)


@vectors_app.command("show")
def show(emotion: Annotated[str, typer.Argument(help="Emotion id or alias.")],
         model: ModelOpt = "smollm2-135m-instruct", corpus: CorpusOpt = "builtin",
         neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
         layer: Annotated[int | None, typer.Option(help="Layer for neighbours.")] = None,
         top: int = 8, device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """One vector: its norm per layer and its nearest emotions by cosine."""
    from rich.table import Table

    from steer.progress import console

    m = _model(model, device, dtype)
    ev = _vectors(m, corpus, neutral, token_offset, denoise)
    i = ev.index(emotion)
    layer = _layer(m, layer)
    norms = m.resid_norms()
    rel = [float(ev.vectors[i, L].norm() / norms[L]) for L in range(m.n_layers)]
    console.print(f"[bold]{ev.names[i]}[/]: norm / median residual norm per layer: "
                  + " ".join(f"{x:.3f}" for x in rel), highlight=False)
    units = ev.units(layer)
    cos = units @ units[i]
    order = cos.argsort(descending=True).tolist()
    table = Table(title=f"nearest to {ev.names[i]} at layer {layer} (cosine)")
    table.add_column("emotion")
    table.add_column("cosine", justify="right")
    for j in [k for k in order if k != i][:top] + [k for k in order if k != i][-3:]:
        table.add_row(ev.names[j], f"{float(cos[j]):+.3f}")
    console.print(table)


@vectors_app.command("export")
def export(out: Annotated[Path, typer.Argument(help="A .safetensors or .gguf file to write.")],
           vector: Annotated[str | None, typer.Option(
               help="For .gguf: the direction to export, e.g. 'desperate' or 'calm - desperate'.")
           ] = None,
           layers: Annotated[str | None, typer.Option(
               help="For .gguf: layers, e.g. '10-20' or '12,14' (default: 1 to the last).")] = None,
           model: ModelOpt = "smollm2-135m-instruct", corpus: CorpusOpt = "builtin",
           neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
           device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Export all vectors (.safetensors) or one direction as a llama.cpp control vector (.gguf).

    A .gguf holds unit direction x the layer's median residual norm per layer, so llama.cpp's
    `--control-vector-scaled FILE S` steers like `scale: S` here."""
    from steer.progress import console
    from steer.vectors.export import control_vector, export_gguf, export_safetensors

    if out.suffix not in (".safetensors", ".gguf"):
        raise VectorError(f"{out}: the file name must end in .safetensors or .gguf")
    if out.suffix == ".gguf" and not vector:
        raise VectorError("exporting a .gguf control vector needs --vector EXPRESSION")
    m = _model(model, device, dtype)
    ev = _vectors(m, corpus, neutral, token_offset, denoise)
    if out.suffix == ".safetensors":
        export_safetensors(ev, out)
    else:
        chosen = _parse_layers(layers, m.n_layers) if layers else None
        hint = getattr(m.bridge.cfg, "architecture", None) or "llama"
        cv = control_vector(ev, vector, m.resid_norms(), chosen)
        export_gguf(cv, out, model_hint=_model_hint(hint),
                    extra={"vector": vector, "model": m.name, "fingerprint": m.fingerprint,
                           "scale_unit": "median residual norm per layer"})
    console.print(f"wrote {out}", highlight=False)


@vectors_app.command("import")
def import_(source: Annotated[Path, typer.Argument(help="A .safetensors or .gguf file.")],
            out: Annotated[Path, typer.Option(help="steer vector file (.safetensors) to write.")],
            name: Annotated[str | None, typer.Option(
                help="For .gguf: the name to give the direction.")] = None):
    """Read vectors from a steer .safetensors file or a llama.cpp control vector and write them
    as a steer vector file (usable as `vectors.file` in a config)."""
    from steer.progress import console
    from steer.vectors.export import (
        export_safetensors,
        gguf_to_vectors,
        import_gguf,
        import_safetensors,
    )

    if not source.is_file():
        raise VectorError(f"{source}: no such file")
    if source.suffix == ".gguf":
        per_layer, meta = import_gguf(source)
        label = name or meta.get("steer.vector") or source.stem
        ev = gguf_to_vectors(per_layer, label, max(per_layer) + 1)
    else:
        ev = import_safetensors(source)
    export_safetensors(ev, out)
    console.print(f"{len(ev.names)} vector(s) x {ev.vectors.shape[1]} layers -> {out}",
                  highlight=False)


def _model_hint(arch: str) -> str:
    return arch.lower().replace("forcausallm", "").replace("bridge", "") or "llama"


def _parse_layers(text: str, n_layers: int) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            out += list(range(int(a), int(b) + 1))
        elif part.strip():
            out.append(int(part))
    bad = [x for x in out if not 0 <= x < n_layers]
    if bad:
        raise VectorError(f"layers {bad} are outside 0..{n_layers - 1}")
    return sorted(set(out))


def read_texts(path: Path) -> list[str]:
    """Texts from JSONL (field 'text'), CSV (column 'text') or plain lines, in input order."""
    import pandas as pd

    if not path.is_file():
        raise SteerError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise SteerError(f"{path}:{i}: expected an object with a 'text' string")
            texts.append(row["text"])
        return texts
    if path.suffix in (".csv", ".tsv"):
        df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        if "text" not in df.columns:
            raise SteerError(f"{path}: no 'text' column (columns: {', '.join(df.columns)})")
        return df["text"].astype(str).tolist()
    return [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def readout(file: Annotated[Path, typer.Argument(help="Texts: .jsonl, .csv/.tsv or plain lines.")],
            out: Annotated[Path, typer.Option(help="Parquet (or .csv) file to write.")],
            layer: Annotated[int | None, typer.Option(help="Read-out layer.")] = None,
            emotions: Annotated[str | None, typer.Option(
                help="Comma-separated emotions (default: all).")] = None,
            model: ModelOpt = "smollm2-135m-instruct", corpus: CorpusOpt = "builtin",
            neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
            device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Score texts: one row per text, in input order, one column per emotion."""
    from steer.metrics.readout import readout_texts
    from steer.progress import console

    texts = read_texts(file)
    if not texts:
        raise SteerError(f"{file}: no texts")
    m = _model(model, device, dtype)
    ev = _vectors(m, corpus, neutral, token_offset, denoise)
    names = [e.strip() for e in emotions.split(",")] if emotions else None
    layer = _layer(m, layer)
    df = readout_texts(m, ev, texts, layer, names)
    if out.suffix == ".csv":
        df.to_csv(out, index=False)
    else:
        df.to_parquet(out, index=False)
    console.print(f"{len(df)} texts x {df.shape[1]} emotions (layer {layer}) -> {out}",
                  highlight=False)


@vectors_app.command("inspect")
def inspect(model: ModelOpt = "smollm2-135m-instruct", corpus: CorpusOpt = "builtin",
            neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
            out: Annotated[Path, typer.Option(help="Folder for the map and inspect.json.")] =
            Path("runs/inspect"),
            show: Annotated[str, typer.Option(help="Emotions to detail (neighbours, logit "
                                              "lens).")] = "desperate,calm,afraid,happy,sad,angry",
            device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Validate vectors per layer: held-out accuracy (leave one topic out), PCs against human
    valence/arousal ratings, neighbours, k-means clusters, logit lens, a labelled PCA map."""
    from rich.table import Table

    from steer.progress import console
    from steer.runs import atomic_write_text
    from steer.vectors import inspect as insp
    from steer.vectors.corpus import load_corpus
    from steer.vectors.store import cache_folder, load_activations

    m = _model(model, device, dtype)
    ev = _vectors(m, corpus, neutral, token_offset, denoise)
    folder = cache_folder(m, load_corpus(corpus, neutral), token_offset, denoise)
    stories, neutral_acts, labels, topics = load_activations(folder)
    layers = list(range(1, m.n_layers))
    acc = insp.heldout_accuracy(stories, labels, topics, ev.names, neutral_acts, denoise, layers)
    pd_rows = []
    for layer in layers:
        pd_rows.append({"layer": layer, **insp.pc_rating_correlations(ev.units(layer), ev.names)})
    import pandas as pd

    geo = pd.DataFrame(pd_rows)
    per_layer = acc.merge(geo, on="layer")
    best = int(per_layer.sort_values(["top5", "top1"], ascending=False).layer.iloc[0])
    table = Table(title=f"per layer ({len(ev.names)} emotions; chance top-1 "
                        f"{1 / len(ev.names):.1%}, top-5 {5 / len(ev.names):.1%})")
    import numpy as np

    cols = ["layer", "top1", "top5", "pc1_valence", "pc2_arousal"]
    for col in cols + ["valence on", "arousal on"]:
        table.add_column(col, justify="right")

    def best_pc(r, dim):  # which of the first 3 PCs tracks a rating best, and its |r|
        vals = [getattr(r, f"pc{j}_{dim}", float("nan")) for j in (1, 2, 3)]
        if all(v != v for v in vals):
            return "-"
        j = int(np.nanargmax(vals))
        return f"PC{j + 1} {vals[j]:.2f}"

    for r in per_layer.itertuples():
        mark = " *" if r.layer == best else ""
        table.add_row(f"{r.layer}{mark}", f"{r.top1:.1%}", f"{r.top5:.1%}",
                      *[f"{getattr(r, c, float('nan')):.2f}" for c in cols[3:]],
                      best_pc(r, "valence"), best_pc(r, "arousal"))
    console.print(table)
    units = ev.units(best)
    poles = insp.pc_poles(units, ev.names)
    for p in poles:
        console.print(f"layer {best} PC{p['pc']} ({p['share']:.0%}; r valence "
                      f"{p['r_valence']:+.2f}, arousal {p['r_arousal']:+.2f}): "
                      f"{', '.join(p['low'])} <-> {', '.join(p['high'])}", highlight=False)
    detail = [e.strip() for e in show.split(",") if e.strip() in ev]
    nb = insp.neighbours(units, ev.names)
    lens = insp.logit_lens(m, ev, best, detail)
    clusters = insp.kmeans(units.numpy(), k=min(10, len(ev.names)))
    members = {int(c): [ev.names[i] for i in range(len(ev.names)) if clusters[i] == c]
               for c in sorted(set(clusters.tolist()))}
    for e in detail:
        console.print(f"[bold]{e}[/] neighbours: {', '.join(nb[ev.names[ev.index(e)]])}; "
                      f"logit lens +: {' '.join(lens[e][0])} | -: {' '.join(lens[e][1])}",
                      highlight=False)
    for c, names in members.items():
        console.print(f"cluster {c}: {', '.join(names)}", highlight=False)
    out.mkdir(parents=True, exist_ok=True)
    png = insp.pca_map(units, ev.names, out / f"pca_map_layer{best}.png",
                       f"{len(ev.names)} emotion vectors, {m.name}, layer {best}")
    report = {"model": m.name, "recommended_layer": best, "per_layer": per_layer.to_dict(
        "records"), "principal_components": poles, "neighbours": nb, "clusters": members,
        "logit_lens": lens, "pca_map": str(png)}
    atomic_write_text(out / "inspect.json", json.dumps(report, indent=2, default=float))
    console.print(f"recommended layer: {best} (highest held-out top-5); wrote {out}",
                  highlight=False)


corpus_app = typer.Typer(no_args_is_help=True, help="Story corpora for building vectors.")


@corpus_app.command("generate")
def corpus_generate(
        out: Annotated[Path, typer.Option(help="Stories JSONL to write.")],
        model: ModelOpt = "smollm2-135m-instruct",
        emotions: Annotated[str | None, typer.Option(
            help="Comma-separated emotions (default: all in the catalog).")] = None,
        per_pair: Annotated[int, typer.Option(help="Stories per emotion x topic.")] = 1,
        max_new_tokens: int = 160, temperature: float = 0.8, batch_size: int = 32,
        device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Let the model write stories per emotion x topic (show, never name); the checker drops
    those that name their emotion; the rest go to a corpus file for `vectors build --corpus`."""
    from steer import progress
    from steer.vectors.catalog import canonical, catalog
    from steer.vectors.writer import TOPICS, write_corpus

    names = ([canonical(e) for e in emotions.split(",") if e.strip()] if emotions
             else list(catalog()))
    unknown = [e for e in names if e not in catalog()]
    if unknown:
        raise VectorError(f"unknown emotions: {', '.join(unknown)}")
    if per_pair < 1:
        raise SteerError("--per-pair must be at least 1")
    m = _model(model, device, dtype)
    total = len(names) * len(TOPICS) * per_pair
    with progress.task("write stories", total) as adv:
        counts = write_corpus(m, names, TOPICS, per_pair, out, max_new_tokens, temperature,
                              batch_size, progress=adv)
    progress.console.print(f"{counts['written']} stories -> {out} (dropped: "
                           f"{counts['named_emotion']} named their emotion, "
                           f"{counts['too_short']} too short)", highlight=False)


def monitor(source: Annotated[str, typer.Argument(
                help="Text to trace, or a file (plain text, or JSONL of chat messages with "
                     "'role' and 'content').")],
            out: Annotated[Path, typer.Option(help="Heatmap PNG; a CSV is written beside it.")
                           ] = Path("runs/monitor.png"),
            emotions: Annotated[str, typer.Option(help="Comma-separated emotions.")] =
            "desperate,calm,afraid,nervous,happy,sad,angry",
            layer: Annotated[int | None, typer.Option(help="Read-out layer.")] = None,
            model: ModelOpt = "smollm2-135m-instruct", corpus: CorpusOpt = "builtin",
            neutral: NeutralOpt = None, token_offset: OffsetOpt = 4, denoise: DenoiseOpt = 0.5,
            device: DeviceOpt = "auto", dtype: DtypeOpt = "auto"):
    """Trace emotions token by token over a prompt or a transcript, as a heatmap and a CSV."""
    from steer.metrics.readout import token_trace, trace_heatmap
    from steer.progress import console

    path = Path(source)
    m = _model(model, device, dtype)
    if path.is_file() and path.suffix == ".jsonl":
        msgs = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        if not all(isinstance(x, dict) and {"role", "content"} <= set(x) for x in msgs):
            raise SteerError(f"{path}: expected one {{'role', 'content'}} object per line")
        text = (m.tokenizer.apply_chat_template(msgs, tokenize=False) if m.has_chat_template
                else "\n".join(f"{x['role']}: {x['content']}" for x in msgs))
    elif path.is_file():
        text = path.read_text(encoding="utf-8")
    else:
        text = source
    ev = _vectors(m, corpus, neutral, token_offset, denoise)
    layer = _layer(m, layer)
    names = [e.strip() for e in emotions.split(",") if e.strip()]
    trace = token_trace(m, ev, text, layer, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    trace.to_csv(out.with_suffix(".csv"), index=False)
    trace_heatmap(trace, out, f"{m.name}, layer {layer}")
    console.print(f"{len(trace)} tokens x {len(names)} emotions -> {out} and "
                  f"{out.with_suffix('.csv')}", highlight=False)
