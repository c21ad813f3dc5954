"""Decoding with a static KV cache, optionally compiled (CUDA graphs on a GPU).

Why: at batch 64 on a GPU, eager decoding is launch-bound: every step launches thousands of
small kernels from Python, and the device waits on them (Hugging Face's eager `generate` reaches
about a fifth of the weight-bandwidth limit for an 8B model, ../shared/FACTS.md). With a static
cache every decode step has the same tensor shapes and addresses, so `torch.compile(mode=
"reduce-overhead")` can record one step as a CUDA graph and replay it. Steering then has to live
in persistent buffers that the recorded step reads: one [batch, 1, d_model] delta per layer,
filled before each batch's decoding starts (zeros where a row is not steered).

Modes (`STEER_DECODE`, read at model load, or `SteerModel.decode`):
- `static`: this path without compiling. Same arithmetic as `compiled`, and testable on a CPU.
- `compiled`: the decode step compiled; one compilation per (batch, cache length) bucket, cache
  lengths rounded up to a multiple of `LENGTH_BUCKET` so a sweep's batches share one.

The network here is a second Hugging Face module tree over the same weight tensors (fastpath.py)
without the bridge's hook relays: hooks registered through the bridge do not reach it. Steering
reaches it through `RowSteering`'s deltas, copied into the buffers; nothing else is hooked.
"""

from __future__ import annotations

import torch

from steer.lm.steering import RowSteering

LENGTH_BUCKET = 64


class StaticDecoder:
    """A relay-free plain tree with permanent steering-add hooks on every decoder layer, static
    caches per (batch, length) bucket, and the (optionally compiled) decode step."""

    def __init__(self, model, compiled: bool):
        from steer.lm.fastpath import plain_tree

        self.model = model
        self.compiled = compiled
        self.net = plain_tree(model.bridge, relay=False)
        self.bufs: dict[int, torch.Tensor] = {}  # layer -> what its output gets added
        for i, layer in enumerate(self.net.model.layers):
            layer.register_forward_hook(self._adder(i))
        self._states: dict[tuple[int, int], dict] = {}
        self._step = torch.compile(_step, mode="reduce-overhead", dynamic=False) if compiled \
            else _step

    def _adder(self, layer: int):
        def add(module, args, out):
            buf = self.bufs.get(layer)
            if buf is None:  # not steered in this batch (eager mode)
                return None
            if isinstance(out, tuple):
                return (out[0] + buf, *out[1:])
            return out + buf

        return add

    def _state(self, batch: int, length: int) -> dict:
        """Cache and input buffers for one bucket, made once and reused (same addresses, so a
        recorded graph stays valid)."""
        from transformers import StaticCache

        key = (batch, -(-length // LENGTH_BUCKET) * LENGTH_BUCKET)
        if key not in self._states:
            dev = self.model.device
            self._states[key] = {
                "cache": StaticCache(config=self.net.config, max_cache_len=key[1]),
                "ids": torch.zeros(batch, 1, dtype=torch.long, device=dev),
                "pos": torch.zeros(batch, 1, dtype=torch.long, device=dev),
                "cpos": torch.zeros(1, dtype=torch.long, device=dev),
                "mask": torch.zeros(batch, key[1], dtype=torch.long, device=dev),
                "deltas": {i: torch.zeros(batch, 1, self.model.d_model, dtype=self.model.dtype,
                                          device=dev) for i in range(len(self.net.model.layers))},
            }
        return self._states[key]

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, rs: RowSteering,
                max_new_tokens: int) -> tuple[torch.Tensor, dict]:
        """Read left-padded prompts into a fresh static cache under `rs`'s "prompt" phase;
        load the decode-phase deltas. Returns the last position's logits and the bucket state."""
        b, t = ids.shape
        st = self._state(b, t + max_new_tokens)
        st["cache"].reset()
        st["mask"].zero_()
        st["mask"][:, :t] = mask
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        rs.phase = "prompt"
        self.bufs = {layer: rs.masked_delta(layer, t, ids.device) for layer in rs.deltas}
        out = self.net(input_ids=ids, attention_mask=st["mask"][:, :t], position_ids=pos,
                       past_key_values=st["cache"], use_cache=True, logits_to_keep=1,
                       cache_position=torch.arange(t, device=ids.device))
        rs.phase = "generated"
        for layer, d in st["deltas"].items():
            if layer in rs.deltas:
                d.copy_(rs.masked_delta(layer, 1, ids.device))
            else:
                d.zero_()
        # compiled: every layer adds its buffer (zeros included), so the recorded graph never
        # depends on which layers a batch steers; eager: only the steered ones
        self.bufs = dict(st["deltas"]) if self.compiled else {
            layer: st["deltas"][layer] for layer in rs.deltas}
        st["pos"].copy_(pos[:, -1:])
        st["cpos"].fill_(t - 1)
        return out.logits[:, -1], st

    def step(self, st: dict, nxt: torch.Tensor) -> torch.Tensor:
        """Feed one new token per row; returns the next logits [batch, vocab]."""
        st["cpos"] += 1
        st["pos"] += 1
        st["ids"].copy_(nxt[:, None])
        st["mask"].index_fill_(1, st["cpos"], 1)
        if self.compiled and st["ids"].is_cuda:
            torch.compiler.cudagraph_mark_step_begin()
        logits = self._step(self.net, st["ids"], st["mask"], st["pos"], st["cpos"], st["cache"])
        return logits.clone() if self.compiled else logits


def _step(net, ids, mask, pos, cpos, cache):
    out = net(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
              cache_position=cpos, use_cache=True)
    return out.logits[:, -1]
