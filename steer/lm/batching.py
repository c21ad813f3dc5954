"""Batch size: a configured number, or "auto": the largest batch that fits, backing off on
out-of-memory errors. What was used is recorded in the run's manifest."""

from __future__ import annotations

import gc

import torch

CPU_AUTO = 32  # on a CPU, throughput stops growing well before memory runs out
MAX_AUTO = 512


def is_oom(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def row_bytes(model, tokens: int) -> int:
    """A rough upper bound on the memory one row of `tokens` tokens needs while decoding: its KV
    cache at every layer, plus a few residual-width activations and one row of logits per step."""
    cfg = model.bridge.cfg
    heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    elem = torch.finfo(model.dtype).bits // 8
    kv = 2 * model.n_layers * heads * cfg.d_head * tokens * elem
    acts = 8 * tokens * model.d_model * elem + 4 * cfg.d_vocab
    return kv + acts


def initial_batch_size(model, tokens: int) -> int:
    """On a GPU: the largest power of two whose rows fit in half the free memory; on a CPU a
    fixed size (see CPU_AUTO)."""
    if model.device.type != "cuda":
        return CPU_AUTO
    free, _ = torch.cuda.mem_get_info(model.device)
    fit = int(0.5 * free // max(row_bytes(model, tokens), 1))
    size = 1
    while size * 2 <= min(fit, MAX_AUTO):
        size *= 2
    return size


class BatchSizer:
    """Holds the batch size of a run; `shrink()` halves it after an out-of-memory error."""

    def __init__(self, requested: int | str, model=None, tokens: int = 256):
        self.requested = requested
        if requested == "auto":
            self.size = initial_batch_size(model, tokens) if model is not None else CPU_AUTO
        else:
            self.size = int(requested)
        self.initial = self.size
        self.backoffs = 0

    def shrink(self) -> bool:
        """Halve the size; False when it is already 1 (the error is then real)."""
        if self.size <= 1:
            return False
        self.size //= 2
        self.backoffs += 1
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return True

    def run(self, fn):
        """Call `fn(batch_size)`, halving the size and retrying on out-of-memory errors."""
        while True:
            try:
                return fn(self.size)
            except Exception as e:
                if not is_oom(e) or not self.shrink():
                    raise

    def record(self) -> dict:
        return {"requested": self.requested, "initial": self.initial, "used": self.size,
                "backoffs": self.backoffs}
