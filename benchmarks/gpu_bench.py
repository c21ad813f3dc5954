"""Steered generation throughput at batch 64 on a GPU, with random-init weights of a real shape
(the embedded model's GGUF is too large to carry to a device machine, and an 8B checkpoint is not
needed to time one).

    python benchmarks/gpu_bench.py --shape llama8b [--batch 64] [--new-tokens 128]
    python benchmarks/gpu_bench.py --shape tiny --device cpu --batch 4 --new-tokens 8   # a check

For each shape: Hugging Face `generate` (eager loop, greedy, the same steering vector added by a
forward hook after block L) against `steer.generate` with the vector as a per-row intervention,
both in bf16 on the same prompts, interleaved and repeated; plus steer unsteered, and the batch
size `--batch-size auto` would pick. steer's steered side is also timed with a static KV cache,
eager (`static`) and with the decode step compiled (`compiled`: CUDA graphs on a GPU), see
steer/lm/static_cache.py; the warm-up time includes compiling. Writes
benchmarks/results/gpu_<shape>.json.

On a bare GPU machine (PyTorch and transformers, no TransformerLens): `benchmarks/gpu_kit.sh`
here prepares `.devkit/` (wheels and the tokenizer), and `benchmarks/gpu_run.sh` there runs both
shapes with every decode mode (checked on a CPU in an environment like the device machine's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from steer.lm.load import TINY_SHAPE

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results"

SHAPES = {
    # SmolLM2-135M-Instruct (the embedded model)
    "embedded": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                     num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True),
    # Llama-3-8B; the vocabulary is the embedded tokenizer's (49,152, not 128,256), so every id
    # the random model emits decodes
    "llama8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                    num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
                    rope_theta=500000.0),
    "tiny": {**{k: v for k, v in TINY_SHAPE.items() if k != "max_position_embeddings"},
             "tie_word_embeddings": True},
}


def build(shape: str, device: torch.device, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    from steer.lm.load import embedded_tokenizer, wrap

    tok = embedded_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      max_position_embeddings=4096, **SHAPES[shape])
    cfg.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(0)
    with torch.device(device):
        hf = LlamaForCausalLM._from_config(cfg, dtype=dtype)
    return wrap(hf, tok, f"random-{shape}", device, dtype)


def prompts(tok, n: int, length: int) -> list[str]:
    """n different chat prompts of about `length` tokens."""
    words = ("the river carried quiet stories past old mills and sleeping towns while "
             "lanterns flickered on the far bank and someone sang about the harvest").split()
    out = []
    for i in range(n):
        body = " ".join(words[(i + k) % len(words)] for k in range(length))
        ids = tok(body, add_special_tokens=False).input_ids[:length]
        out.append(tok.decode(ids))
    return out


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama8b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode", default="dynamic,static,compiled",
                    help="steer decode modes to time besides the default (comma-separated)")
    args = ap.parse_args()

    from steer.lm.batching import BatchSizer
    from steer.lm.decode import GenRow, Sampling
    from steer.lm.decode import generate_rows as generate
    from steer.lm.steering import Intervention, delta

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    t = time.perf_counter()
    m = build(args.shape, device, dtype)
    build_s = time.perf_counter() - t
    layer = m.n_layers // 2
    m.resid_norms()
    iv = Intervention("random-3", layer, 0.1, "all")
    texts = [m.format_prompt(p) for p in prompts(m.tokenizer, args.batch, args.prompt_tokens)]
    never = [-1]  # random weights: run every row to the token limit on both sides
    samp = Sampling(max_new_tokens=args.new_tokens, temperature=0.0, top_p=1.0, stop_ids=never)

    def steer_side(ivs, decode="dynamic"):
        rows = [GenRow(x, ivs, seed=i) for i, x in enumerate(texts)]

        def run():
            m.decode = decode
            try:
                sync(device)
                t0 = time.perf_counter()
                out = generate(m, rows, None, samp, batch_size=args.batch)
                sync(device)
            finally:
                m.decode = "dynamic"
            return time.perf_counter() - t0, out
        return run

    hf = m.plain if m.plain is not None else m.bridge.original_model
    d = delta(iv, None, m.resid_norms(), m.d_model).to(device=device, dtype=dtype)
    ids, mask = m.encode(texts)

    def hook(mod, a, out):
        return (out[0] + d, *out[1:]) if isinstance(out, tuple) else out + d

    def hf_run():
        # the HF module tree beneath steer (same weights), its own generate loop, no bridge
        h = hf.model.layers[layer].register_forward_hook(hook)
        try:
            sync(device)
            t0 = time.perf_counter()
            with torch.no_grad():
                out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                  max_new_tokens=args.new_tokens,
                                  min_new_tokens=args.new_tokens,
                                  pad_token_id=m.tokenizer.pad_token_id)
            sync(device)
            return time.perf_counter() - t0, out
        finally:
            h.remove()

    sides = {"hf_steered": hf_run, "steer_steered": steer_side((iv,)),
             "steer_unsteered": steer_side(())}
    for mode in args.decode.split(","):
        if mode != "dynamic":
            sides[f"steer_steered_{mode}"] = steer_side((iv,), mode)
    warm = {}
    for k, f in sides.items():  # warm-up (kernels, allocator; compiling, for "compiled")
        warm[k], out = f()
        if k.startswith("steer_steered"):
            warm[k + "_first_row"] = out[0].ids[:8]
    print("warm-up s:", {k: round(v, 1) for k, v in warm.items() if isinstance(v, float)},
          flush=True)
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.reps):
        for k in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
            times[k].append(sides[k]()[0])
    tokens = args.batch * args.new_tokens
    tps = {k: tokens / statistics.median(v) for k, v in times.items()}
    sizer = BatchSizer("auto", m, args.prompt_tokens + args.new_tokens)
    res = {
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                    else "cpu", "torch": torch.__version__, "cpus": os.cpu_count()},
        "shape": args.shape, "dtype": args.dtype, "batch": args.batch,
        "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
        "decode": "plain" if m.plain is not None else "bridge", "build_s": round(build_s, 1),
        "tok_s": {k: round(v, 1) for k, v in tps.items()},
        "times_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "steer_steered_over_hf": round(tps["steer_steered"] / tps["hf_steered"], 3),
        **{f"{k}_over_hf": round(tps[k] / tps["hf_steered"], 3) for k in tps
           if k.startswith("steer_steered_")},
        "warmup_s": {k: (round(v, 1) if isinstance(v, float) else v) for k, v in warm.items()},
        "steered_over_unsteered": round(tps["steer_steered"] / tps["steer_unsteered"], 3),
        "auto_batch_size": sizer.size,
        "peak_gpu_mem_gb": (round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                            if device.type == "cuda" else None),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"gpu_{args.shape}.json"
    path.write_text(json.dumps(res, indent=2))
    print(json.dumps({k: v for k, v in res.items() if k in ("shape", "tok_s", "auto_batch_size",
                                                             "steered_over_unsteered")
                      or k.endswith("_over_hf")}))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
