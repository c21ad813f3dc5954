"""Emotion vectors on the embedded model: build and reload time, held-out accuracy, geometry
against human ratings, and read-out of real text nobody on the project wrote.

    python benchmarks/vectors_bench.py [--n 1500] [--skip-build]

Writes benchmarks/results/vectors.json and prints a table. Timings are also given as ratios
against a baseline measured in the same process (a plain forward pass over the same texts), since
machines here are shared and noisy. GoEmotions and EmoBank are read from ../shared/data when it
exists and skipped otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results"

# GoEmotions labels with a counterpart among the 171 concepts.
GOEMOTIONS_TO_STEER = {
    "amusement": "amused", "anger": "angry", "annoyance": "annoyed", "caring": "compassionate",
    "confusion": "puzzled", "disgust": "disgusted", "embarrassment": "embarrassed",
    "excitement": "excited", "fear": "afraid", "gratitude": "grateful", "grief": "grief-stricken",
    "joy": "joyful", "love": "loving", "nervousness": "nervous", "optimism": "optimistic",
    "pride": "proud", "relief": "relieved", "remorse": "remorseful", "sadness": "sad",
    "surprise": "surprised", "disappointment": "dispirited",
}


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve from ranks (ties averaged)."""
    ranks = pd.Series(scores).rank().to_numpy()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1500, help="texts sampled from each real data set")
    ap.add_argument("--skip-build", action="store_true", help="reuse cached vectors")
    ap.add_argument("--layers", default=None,
                    help="read-out layers for the real-text checks (default: 8,12,16,20 on the "
                         "embedded model, the same depths elsewhere)")
    ap.add_argument("--model", default="smollm2-135m-instruct",
                    help="any model `steer` loads (results go to vectors-<name>.json when it is "
                         "not the embedded model)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    from steer import load_model
    from steer.lm.load import EMBEDDED
    from steer.lm.read import text_means
    from steer.vectors import inspect as insp
    from steer.vectors.corpus import load_corpus
    from steer.vectors.readout import readout_layers
    from steer.vectors.store import build_or_load, cache_folder, load_activations

    res: dict = {"machine": "2-core CPU (this sandbox)", "model": args.model}
    model, t_load = timed(lambda: load_model(args.model, "cpu", "float32"))
    res["model_load_s"] = round(t_load, 2)
    corpus = load_corpus()
    texts = [s.text for s in corpus.stories] + corpus.neutral
    res["corpus"] = {"emotions": len(corpus.emotions), "stories": len(corpus.stories),
                     "neutral": len(corpus.neutral)}
    model.resid_norms()
    if not args.skip_build:
        ev, t_build = timed(lambda: build_or_load(model, corpus, rebuild=True))
        # Baselines on 200 of the texts: the same pass (the build's overhead beyond reading), and
        # one two-threaded pass (what text_means did before batches ran in parallel threads).
        sub = texts[::max(1, len(texts) // 200)][:200]
        t_plain, t_serial = [], []
        for _ in range(2):
            t_plain.append(timed(lambda: text_means(model, sub))[1])
            t_serial.append(timed(lambda: text_means(model, sub, parallel=False))[1])
        res["build_s"] = round(t_build, 1)
        res["build_vs_plain_pass_ratio"] = round(t_build / (min(t_plain) * len(texts) / len(sub)),
                                                 3)
        res["parallel_threads_speedup"] = round(min(t_serial) / min(t_plain), 3)
    else:
        build_or_load(model, corpus)  # builds (untimed) only when nothing is cached yet
    ev, t_reload = timed(lambda: build_or_load(model, corpus))
    res["cached_reload_s"] = round(t_reload, 3)

    stories, neutral, labels, topics = load_activations(cache_folder(model, corpus))
    layers_all = list(range(1, model.n_layers))
    acc = insp.heldout_accuracy(stories, labels, topics, ev.names, neutral, 0.5, layers_all)
    geo = pd.DataFrame([{"layer": L, **insp.pc_rating_correlations(ev.units(L), ev.names)}
                        for L in layers_all])
    per_layer = acc.merge(geo, on="layer")
    best = int(per_layer.sort_values(["top5", "top1"], ascending=False).layer.iloc[0])
    res["heldout"] = {"chance_top1": 1 / len(ev.names), "chance_top5": 5 / len(ev.names),
                      "recommended_layer": best,
                      "per_layer": per_layer.round(4).to_dict("records")}

    if args.layers:
        layers = [int(x) for x in args.layers.split(",")]
    else:  # 8, 12, 16, 20 of 30 on the embedded model
        layers = sorted({round(model.n_layers * f) for f in (8 / 30, 12 / 30, 16 / 30, 20 / 30)})
    rng = np.random.default_rng(0)
    go = DATA / "goemotions"
    if (go / "test.tsv").exists():
        names = (go / "labels.txt").read_text().split()
        df = pd.read_csv(go / "test.tsv", sep="\t", header=None, names=["text", "labels", "id"],
                         quoting=3)
        df = df.iloc[rng.choice(len(df), size=min(args.n, len(df)), replace=False)]
        label_sets = [{names[int(i)] for i in str(x).split(",")} for x in df["labels"]]
        wanted = list(GOEMOTIONS_TO_STEER.values())
        out = {}
        by_layer = readout_layers(model, ev, df["text"].tolist(), layers, wanted)
        for layer in layers:
            scores = by_layer[layer]
            per = {}
            for g, e in GOEMOTIONS_TO_STEER.items():
                pos = np.array([g in s for s in label_sets])
                if pos.sum() >= 5:
                    per[f"{g}->{e}"] = round(auroc(scores[e].to_numpy(), pos), 4)
            out[layer] = {"mean_auroc": round(float(np.nanmean(list(per.values()))), 4),
                          "per_label": per}
        res["goemotions"] = {"n_texts": len(df), "by_layer": out}
    else:
        res["goemotions"] = "skipped: ../shared/data/goemotions absent"

    eb = DATA / "emobank" / "emobank.csv"
    if eb.exists():
        df = pd.read_csv(eb)
        df = df.iloc[rng.choice(len(df), size=min(args.n, len(df)), replace=False)]
        ratings = insp.emotion_ratings(ev.names).dropna()
        weights = torch.tensor((ratings.valence - ratings.valence.mean()).to_numpy(),
                               dtype=torch.float32)
        out = {}
        by_layer = readout_layers(model, ev, df["text"].astype(str).tolist(), layers,
                                  list(ratings.index))
        for layer in layers:
            scores = by_layer[layer]
            valence = scores.to_numpy() @ weights.numpy()
            out[layer] = round(float(np.corrcoef(valence, df["V"].to_numpy())[0, 1]), 4)
        res["emobank_valence_r"] = {"n_texts": len(df), "by_layer": out,
                                    "axis": "sum of (valence - mean) x read-out"}
    else:
        res["emobank_valence_r"] = "skipped: ../shared/data/emobank absent"

    OUT.mkdir(parents=True, exist_ok=True)
    slug = "" if args.model == EMBEDDED else "-" + Path(args.model).stem.lower()
    (OUT / f"vectors{slug}.json").write_text(json.dumps(res, indent=2, default=str))
    b = per_layer[per_layer.layer == best].iloc[0]
    print(f"vectors: {len(ev.names)} emotions; build {res.get('build_s')} s "
          f"(x{res.get('build_vs_plain_pass_ratio')} of a plain pass); cached reload "
          f"{res['cached_reload_s']} s")
    print(f"held-out (leave one topic out) at layer {best}: top-1 {b.top1:.1%}, top-5 "
          f"{b.top5:.1%}; |r| PC1~valence {b.get('pc1_valence', float('nan')):.2f}, "
          f"PC2~arousal {b.get('pc2_arousal', float('nan')):.2f}")
    if isinstance(res["goemotions"], dict):
        for layer, v in res["goemotions"]["by_layer"].items():
            print(f"GoEmotions layer {layer}: mean AUROC {v['mean_auroc']:.3f}")
    if isinstance(res["emobank_valence_r"], dict):
        for layer, r in res["emobank_valence_r"]["by_layer"].items():
            print(f"EmoBank valence layer {layer}: r = {r:.3f}")


if __name__ == "__main__":
    main()
