"""Steer the embedded model from Python: compare replies under +desperate, +calm and a random
direction of the same norm, and read emotions out of each reply.

    python examples/steer_from_python.py                # the embedded SmolLM2-135M-Instruct
    python examples/steer_from_python.py tiny-random    # seconds; the numbers mean nothing
"""

import sys

import steer

model_name = sys.argv[1] if len(sys.argv) > 1 else "smollm2-135m-instruct"
m = steer.load_model(model_name)
ev = steer.emotion_vectors(m)  # the 171 built-in emotion vectors; built once, then cached

layer = m.n_layers * 2 // 5  # layer 12 of 30 on the embedded model
prompts = ["My code is due in an hour and the tests keep failing. What should I do?",
           "The server is down and customers keep calling. What do I tell them?"]
conditions = {
    "unsteered": [],
    "+desperate": [steer.Intervention("desperate", layer, 0.2)],
    "+calm": [steer.Intervention(ev["calm"], layer, 0.2)],
    "desperate - calm": [steer.Intervention(ev["desperate"] - ev["calm"], layer, 0.2)],
    "random": [steer.Intervention("random-0", layer, 0.2)],
}

rows = []
for name, ivs in conditions.items():
    out = steer.generate(m, prompts, steer=ivs, vectors=ev, max_new_tokens=32, temperature=0)
    # the unsteered model re-reads each reply: how desperate or calm does it read?
    reads = steer.readout(m, ev, out.texts, emotions=["desperate", "calm", "afraid"])
    reads.insert(0, "condition", name)
    reads.insert(1, "reply", [t[:60].replace("\n", " ") for t in out.texts])
    rows.append(reads)

import pandas as pd  # noqa: E402

table = pd.concat(rows, ignore_index=True)
print(table.to_string(index=False, float_format=lambda x: f"{x:+.3f}"))
print()
print(table.groupby("condition", sort=False)[["desperate", "calm", "afraid"]].mean().round(3))
