"""Reading emotions out of text: project the model's residual activations on emotion vectors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def readout_layers(model, vectors, texts: list[str], layers: list[int],
                   emotions: list[str] | None = None, token_offset: int = 1,
                   batch_size: int = 16) -> dict[int, pd.DataFrame]:
    """Read-outs at several layers from one pass over the texts: {layer: DataFrame}."""
    from steer.lm.read import text_means

    names = [vectors.names[vectors.index(e)] for e in (emotions or vectors.names)]
    means = text_means(model, texts, token_offset, batch_size)
    norms = model.resid_norms()
    out = {}
    for layer in layers:
        proj = means[:, layer] @ vectors.units(layer, names).T / float(norms[layer])
        out[layer] = pd.DataFrame(proj.numpy(), columns=names)
    return out


def readout(model, vectors, texts: str | list[str], layer: int | None = None,
            emotions: list[str] | None = None, token_offset: int = 1, batch_size: int = 16
            ) -> pd.DataFrame:
    """Read emotions out of texts: one row per text (in order), one column per emotion (all, or
    `emotions`): the mean residual activation at `layer` (default: the model's read-out layer)
    over the text's tokens from `token_offset` on (attention-sink tokens dropped), projected on
    each emotion's unit vector, in units of the layer's median residual norm.

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> ev = steer.emotion_vectors(m, quiet=True)
        >>> df = steer.readout(m, ev, ["I can't fix it in time.", "What a calm day."], layer=2,
        ...                    emotions=["desperate", "calm"])
        >>> df.shape, list(df.columns)
        ((2, 2), ['desperate', 'calm'])
    """
    if isinstance(texts, str):
        texts = [texts]
    layer = check_layer(model, layer)
    return readout_layers(model, vectors, texts, [layer], emotions, token_offset,
                          batch_size)[layer]


def trace(model, vectors, text: str, layer: int | None = None,
          emotions: list[str] | None = None) -> pd.DataFrame:
    """Emotions token by token over one text: one row per token (column `token`), one column
    per emotion (projection on the unit vector / the layer's median norm). Attention-sink tokens
    (norm > 5x the median) are reported as NaN rather than as huge values.

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> ev = steer.emotion_vectors(m, quiet=True)
        >>> df = steer.trace(m, ev, "Nothing works and time is up.", layer=2, emotions=["calm"])
        >>> list(df.columns)
        ['token', 'calm']
    """
    import torch

    from steer.lm.norms import OUTLIER_FACTOR
    from steer.lm.steering import capture

    layer = check_layer(model, layer)

    names = [vectors.names[vectors.index(e)] for e in (emotions or vectors.names)]
    ids, mask = model.encode([text])
    with torch.no_grad(), capture(model, [layer]) as acts:
        model.forward(ids, mask, logits_to_keep=1)
    a = acts[layer][0].float().cpu()
    norm = float(model.resid_norms()[layer])
    proj = a @ vectors.units(layer, names).T / norm
    proj[a.norm(dim=-1) > OUTLIER_FACTOR * norm] = float("nan")
    df = pd.DataFrame(proj.numpy(), columns=names)
    df.insert(0, "token", [model.tokenizer.decode([t]) for t in ids[0].tolist()])
    return df


def check_layer(model, layer: int | None) -> int:
    """The asked-for layer, checked against the model, or its default read-out layer."""
    from steer.errors import VectorError

    layer = model.default_readout_layer if layer is None else layer
    if not 0 <= layer < model.n_layers:
        raise VectorError(f"layer {layer} is outside 0..{model.n_layers - 1}")
    return layer


def read_texts(path: str | Path) -> list[str]:
    """Texts from JSONL (field 'text'), CSV/TSV (column 'text') or plain lines, in input order."""
    from steer.errors import InputError
    from steer.io import read_jsonl, read_text

    path = Path(path)
    if path.suffix == ".jsonl":
        rows = read_jsonl(path, "texts")
        for i, row in rows:
            if not isinstance(row.get("text"), str):
                raise InputError(f"{path}:{i}: expected an object with a 'text' string")
        texts = [row["text"] for _, row in rows]
    elif path.suffix in (".csv", ".tsv"):
        read_text(path, "texts")  # exists and is text
        df = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",")
        if "text" not in df.columns:
            raise InputError(f"{path}: no 'text' column (columns: {', '.join(df.columns)})")
        texts = df["text"].astype(str).tolist()
    else:
        texts = [x for x in read_text(path, "texts").splitlines() if x.strip()]
    if not texts:
        raise InputError(f"{path}: no texts")
    return texts


def transcript(model, source: str) -> str:
    """The text to trace: `source` itself, a text file's contents, or a JSONL file of chat
    messages ({role, content} per line) formatted with the model's chat template."""
    from steer.errors import InputError
    from steer.io import read_jsonl, read_text

    path = Path(source)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):  # a text too long to be a file name
        is_file = False
    if not is_file:
        return source
    if path.suffix != ".jsonl":
        return read_text(path, "transcript")
    msgs = [row for _, row in read_jsonl(path, "transcript")]
    if not msgs or not all({"role", "content"} <= set(x) for x in msgs):
        raise InputError(f"{path}: expected one {{'role', 'content'}} object per line")
    if model.has_chat_template:
        return model.tokenizer.apply_chat_template(msgs, tokenize=False)
    return "\n".join(f"{x['role']}: {x['content']}" for x in msgs)
