"""A faster forward pass for generation: the model's own Hugging Face module tree, sharing the
bridge's weight tensors, with the bridge's residual hook points relayed.

Why: TransformerBridge wraps every block, norm and linear layer in a Python module with hook
points (about 4.5x the module calls of the plain model per decode step), computes each RMSNorm
twice, and switches attention to a Python-level eager implementation. On 2 CPU cores a steered
decode step through the bridge took 0.78x the speed of plain Hugging Face (benchmarks/
throughput_bench.py). Generation only needs the residual stream after each block, so the plain
tree runs the step, and after each decoder layer it calls the bridge's `blocks.L.hook_out`
(= `hook_resid_post`) hook point, only when a hook is registered there. Steering and capture
hooks registered through `model.bridge.hooks(...)` therefore apply unchanged.

`build_plain` checks at load time that the plain tree's logits match the bridge's, steered and
not; when they do not (or the architecture has no `model.layers`), it returns None and
generation goes through the bridge.
"""

from __future__ import annotations

import copy
import itertools

import torch

TOLERANCE = 1e-3  # max |logit difference| relative to the logits' scale (attention kernels differ)


def build_plain(bridge, device):
    """A plain HF model over `bridge`'s weights with relayed hook points, or None."""
    try:
        plain = plain_tree(bridge)
    except Exception:
        return None
    if not _agrees(bridge, plain, device):
        return None
    return plain


def plain_tree(bridge, relay: bool = True):
    from transformers import AutoModelForCausalLM

    src = bridge.original_model
    cfg = copy.deepcopy(src.config)
    cfg._attn_implementation = "sdpa"
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")
    # The bridge rewraps modules in place; their tensors keep the original names once the
    # wrappers' own path component is dropped.
    state = {k.replace("._original_component", ""): v
             for k, v in itertools.chain(src.named_parameters(), src.named_buffers())}
    plain.load_state_dict(state, strict=False, assign=True)
    plain.tie_weights()
    # Non-persistent buffers (rotary frequencies, Gemma's embedding scale) are not in a state
    # dict: share the bridge's.
    for name, buf in list(plain.named_buffers()):
        if buf.is_meta and name in state:
            owner, _, attr = name.rpartition(".")
            plain.get_submodule(owner)._buffers[attr] = state[name]
    left = [n for n, p in itertools.chain(plain.named_parameters(), plain.named_buffers())
            if p.is_meta]
    if left:
        raise RuntimeError(f"not shared with the bridge: {left[:3]}")
    if len(plain.model.layers) != len(bridge.blocks):
        raise RuntimeError("layer count differs from the bridge's")
    if relay:
        for i, layer in enumerate(plain.model.layers):
            layer.register_forward_hook(_relay(bridge.blocks[i].hook_out))
    return plain.eval()


def _relay(hook_point):
    def relay(module, args, out):
        if not hook_point._forward_hooks:
            return None
        if isinstance(out, tuple):
            return (hook_point(out[0]), *out[1:])
        return hook_point(out)

    return relay


def forward(plain, ids, mask, cache=None, logits_to_keep: int = 0, use_cache: bool = True):
    """(logits, cache) for left-padded `ids` given the full attention `mask` (past + new);
    positions count only attended tokens, as the bridge's do."""
    pos = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
    out = plain(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                use_cache=use_cache or cache is not None, logits_to_keep=logits_to_keep)
    return out.logits, out.past_key_values


def _agrees(bridge, plain, device) -> bool:
    """Both trees give the same logits on a short padded batch, with and without a hook adding
    to the residual stream halfway up."""
    g = torch.Generator().manual_seed(0)
    vocab = int(bridge.cfg.d_vocab)
    ids = torch.randint(3, min(vocab, 1000), (2, 7), generator=g).to(device)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    layer = len(plain.model.layers) // 2
    d = torch.randn(int(bridge.cfg.d_model), generator=g).to(device)

    def add(x, hook=None):
        return x + d.to(x.dtype)

    try:
        with torch.no_grad():
            for hooks in ([], [(f"blocks.{layer}.hook_resid_post", add)]):
                with bridge.hooks(fwd_hooks=hooks):
                    ref = bridge(ids, attention_mask=mask)
                    got, _ = forward(plain, ids, mask)
                scale = ref.float().abs().max().clamp(min=1.0)
                keep = mask.bool()
                err = (ref.float() - got.float()).abs()[keep].max() / scale
                if not bool(err < TOLERANCE):
                    return False
    except Exception:
        return False
    return True
