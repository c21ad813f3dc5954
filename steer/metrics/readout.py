"""Reading emotions out of text: project the model's residual activations on emotion vectors."""

from __future__ import annotations

import pandas as pd


def readout_layers(model, vectors, texts: list[str], layers: list[int],
                   emotions: list[str] | None = None, token_offset: int = 1,
                   batch_size: int = 16) -> dict[int, pd.DataFrame]:
    """Read-outs at several layers from one pass over the texts: {layer: DataFrame}."""
    from steer.vectors.extract import text_means

    names = [vectors.names[vectors.index(e)] for e in (emotions or vectors.names)]
    means = text_means(model, texts, token_offset, batch_size)
    norms = model.resid_norms()
    out = {}
    for layer in layers:
        proj = means[:, layer] @ vectors.units(layer, names).T / float(norms[layer])
        out[layer] = pd.DataFrame(proj.numpy(), columns=names)
    return out


def readout_texts(model, vectors, texts: list[str], layer: int, emotions: list[str] | None = None,
                  token_offset: int = 1, batch_size: int = 16) -> pd.DataFrame:
    """One row per text, one column per emotion: the mean residual activation at `layer` over the
    text's tokens (from `token_offset`, sink tokens dropped), projected on each unit vector, in
    units of the layer's median norm."""
    return readout_layers(model, vectors, texts, [layer], emotions, token_offset,
                          batch_size)[layer]


def token_trace(model, vectors, text: str, layer: int, emotions: list[str] | None = None
                ) -> pd.DataFrame:
    """Per-token read-outs of one text: one row per token (column `token`), one column per
    emotion (projection on the unit vector / the layer's median norm). Attention-sink tokens
    (norm > 5x the median) are reported as NaN rather than as huge values."""
    import torch

    from steer.steering import capture
    from steer.vectors.norms import OUTLIER_FACTOR

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


def trace_heatmap(trace: pd.DataFrame, path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = trace.drop(columns="token").to_numpy().T
    width = min(40, 2 + 0.22 * values.shape[1])
    fig, ax = plt.subplots(figsize=(width, 1 + 0.35 * values.shape[0]), dpi=110)
    lim = np.nanmax(np.abs(values)) if np.isfinite(values).any() else 1.0
    im = ax.imshow(values, aspect="auto", cmap="coolwarm", vmin=-lim, vmax=lim)
    ax.set_yticks(range(values.shape[0]), list(trace.columns[1:]), fontsize=8)
    ax.set_xticks(range(len(trace)), [t.replace("\n", "\\n") for t in trace.token],
                  rotation=90, fontsize=6)
    fig.colorbar(im, ax=ax, label="read-out (fraction of median norm)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
