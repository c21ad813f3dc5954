"""What sets the first principal component of a set of emotion vectors: the model, the texts the
vectors come from, or which emotions are in the set?

    python benchmarks/geometry_bench.py [--models smollm2-135m-instruct,/path/to/other.gguf]

For every model given, it builds (or loads from cache) the 171 vectors from the built-in story
corpus and measures, per layer, |r| of PC1-PC3 with human valence and arousal ratings
(Warriner et al. 2013). Where ../shared/data/goemotions exists it also builds vectors the same
way from natural text: GoEmotions dev comments that carry a single label (at most 120 per label),
each label as an "emotion", the comments labelled neutral as the neutral set, averaged from the
second token on (they are short). It then compares
  - story vectors, all 171 concepts;
  - story vectors of only the concepts that match GoEmotions labels (the same kind of emotion
    set, different texts);
  - GoEmotions vectors (different texts);
and, across models, how closely their story-vector PC1s agree (Pearson r over the 171 concepts
of each concept's PC1 coordinate, at half depth).

Writes benchmarks/results/geometry.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from vectors_bench import DATA, GOEMOTIONS_TO_STEER, OUT

# GoEmotions labels and the nearest of the 171 concepts: the vectors bench's map, plus three
# labels it leaves out because their counterparts are looser.
COUNTERPARTS = {**GOEMOTIONS_TO_STEER, "admiration": "awestruck", "approval": "pleased",
                "disapproval": "indignant"}


def geometry(units_by_layer: dict[int, torch.Tensor], names: list[str]) -> dict[int, dict]:
    from steer.vectors import inspect as insp

    out = {}
    for layer, units in units_by_layer.items():
        pc = insp.pc_rating_correlations(units, names)
        out[layer] = {k: round(v, 3) if isinstance(v, float) else v for k, v in pc.items()}
    return out


def recentred_units(ev, layer: int, names: list[str]) -> torch.Tensor:
    """Unit vectors of a subset, re-centred on the subset's own mean (as if built alone)."""
    u = ev.units(layer, names)
    u = u - u.mean(0, keepdim=True)
    return u / u.norm(dim=-1, keepdim=True)


def goemotions_corpus(per_label: int, tmp: Path):
    from steer.vectors.corpus import load_corpus

    names = (DATA / "goemotions" / "labels.txt").read_text().split()
    df = pd.read_csv(DATA / "goemotions" / "dev.tsv", sep="\t", header=None,
                     names=["text", "labels", "id"], quoting=3)
    df = df[~df["labels"].astype(str).str.contains(",")]
    df["label"] = [names[int(x)] for x in df["labels"]]
    picked = pd.concat([g.sample(min(len(g), per_label), random_state=0)
                        for _, g in df.groupby("label")])
    emo = picked[(picked.label != "neutral")]
    emo = emo[emo.groupby("label").label.transform("size") >= 20]
    stories, neutral = tmp / "goemotions_stories.jsonl", tmp / "goemotions_neutral.jsonl"
    stories.write_text("".join(json.dumps({"emotion": r.label, "text": r.text}) + "\n"
                               for r in emo.itertuples()))
    neutral.write_text("".join(json.dumps({"text": t}) + "\n"
                               for t in picked[picked.label == "neutral"].text))
    return load_corpus(stories, neutral), emo.label.value_counts().to_dict()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="smollm2-135m-instruct")
    ap.add_argument("--per-label", type=int, default=120)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from steer import load_model
    from steer.vectors import inspect as insp
    from steer.vectors.corpus import load_corpus
    from steer.vectors.store import build_or_load

    res: dict = {"machine": "2-core CPU (this sandbox)", "models": {}}
    pc1_coords = {}
    story_corpus = load_corpus()
    have_go = (DATA / "goemotions" / "dev.tsv").exists()
    for name in args.models.split(","):
        model = load_model(name, "cpu", "float32")
        n = model.n_layers
        layers = list(range(max(1, n // 4), n))
        ev = build_or_load(model, story_corpus)
        entry = {"n_layers": n,
                 "stories_all_171": geometry({L: ev.units(L) for L in layers}, ev.names)}
        pc1_coords[name] = insp.pca_axes(ev.units(n // 2), 1)[0][:, 0]
        if have_go:
            with tempfile.TemporaryDirectory() as tmp:
                go_corpus, counts = goemotions_corpus(args.per_label, Path(tmp))
                gev = build_or_load(model, go_corpus, token_offset=1)
            labels = list(gev.names)
            # The loader already maps labels that are aliases of a concept (fear -> afraid).
            pairs = {g: COUNTERPARTS.get(g, g) for g in labels
                     if COUNTERPARTS.get(g, g) in ev.names}
            concepts = list(pairs.values())
            # Same concepts, same ratings; only the texts differ.
            entry["stories_goemotions_counterparts"] = geometry(
                {L: recentred_units(ev, L, concepts) for L in layers}, concepts)
            entry["goemotions_texts_as_counterparts"] = geometry(
                {L: recentred_units(gev, L, list(pairs)) for L in layers}, concepts)
            entry["goemotions_texts"] = geometry({L: gev.units(L) for L in layers}, labels)
            entry["goemotions_texts_per_label"] = counts
        res["models"][name] = entry
        del model
    names = list(pc1_coords)
    res["story_pc1_agreement_at_half_depth"] = {
        f"{a} ~ {b}": round(abs(float(np.corrcoef(pc1_coords[a], pc1_coords[b])[0, 1])), 3)
        for i, a in enumerate(names) for b in names[i + 1:]}
    if not have_go:
        res["goemotions"] = "skipped: ../shared/data/goemotions absent"

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "geometry.json").write_text(json.dumps(res, indent=2, default=str))
    for name, entry in res["models"].items():
        span = f"{min(entry['stories_all_171'])}-{max(entry['stories_all_171'])}"
        print(f"\n{name}: |r| with human ratings, median over layers {span} [max]")
        print(f"{'vectors from':<44} {'PC1~val':>12} {'PC2~aro':>12} {'PC3~val':>12}")
        for key in ("stories_all_171", "stories_goemotions_counterparts",
                    "goemotions_texts_as_counterparts", "goemotions_texts"):
            if key not in entry:
                continue
            g = pd.DataFrame(entry[key]).T
            cells = [f"{g[c].median():.2f} [{g[c].max():.2f}]"
                     for c in ("pc1_valence", "pc2_arousal", "pc3_valence")]
            n_rated = int(g["n_rated"].iloc[0])
            print(f"{key + f' ({n_rated} rated)':<44} " + " ".join(f"{c:>12}" for c in cells))
    for pair, r in res["story_pc1_agreement_at_half_depth"].items():
        print(f"story-vector PC1 agreement, {pair}: |r| = {r}")


if __name__ == "__main__":
    main()
