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
