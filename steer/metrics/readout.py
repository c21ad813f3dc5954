"""Reading emotions out of text: project the model's residual activations on emotion vectors."""

from __future__ import annotations

import pandas as pd


def readout_texts(model, vectors, texts: list[str], layer: int, emotions: list[str] | None = None,
                  token_offset: int = 1, batch_size: int = 16) -> pd.DataFrame:
    """One row per text, one column per emotion: the mean residual activation at `layer` over the
    text's tokens (from `token_offset`, sink tokens dropped), projected on each unit vector, in
    units of the layer's median norm."""
    from steer.vectors.extract import text_means

    names = [vectors.names[vectors.index(e)] for e in (emotions or vectors.names)]
    means = text_means(model, texts, token_offset, batch_size)[:, layer]
    proj = means @ vectors.units(layer, names).T / float(model.resid_norms()[layer])
    return pd.DataFrame(proj.numpy(), columns=names)
