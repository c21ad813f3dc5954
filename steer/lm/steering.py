"""Interventions on the residual stream: the only module that registers hooks.

An `Intervention` adds `scale * median_norm[layer] * unit(direction)` to the residual stream after
block `layer` (the paper's convention: scale is a fraction of the layer's median per-token norm).
The direction is an expression over emotion vectors (`desperate`, `desperate - calm`,
`0.5*happy + calm`), a `Direction` object, or `random-K`, a seeded random direction used as a
control.

Rows of one batch may carry different interventions (or none), so one forward pass serves many
conditions: `steer_rows` builds a per-row delta for each layer and registers one hook per layer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from steer.errors import SteeringError
from steer.lm.directions import POSITIONS, Direction, label, unit_direction


@dataclass(frozen=True)
class Intervention:
    """Add `scale` x the median residual norm at `layer` x the unit `vector` to the residual
    stream after block `layer`, at `positions` (all | prompt | generated).

    `vector` is an expression (`"desperate - calm"`, `"random-0"`) or a `Direction`
    (`ev["desperate"] - ev["calm"]`).

    Example:
        >>> import steer
        >>> steer.Intervention("desperate - calm", layer=12, scale=0.1)
        Intervention(vector='desperate - calm', layer=12, scale=0.1, positions='all')
    """

    vector: str | Direction
    layer: int
    scale: float
    positions: str = "all"

    def __post_init__(self):
        if self.positions not in POSITIONS:
            raise SteeringError(f"positions must be one of {POSITIONS}, got {self.positions!r}")
        if not isinstance(self.vector, (str, Direction)):
            raise SteeringError(f"an intervention's vector is an expression or a Direction, got "
                                f"{type(self.vector).__name__}")

    @property
    def label(self) -> str:
        return label(self.vector)


def delta(iv: Intervention, vectors, norms: torch.Tensor, d_model: int) -> torch.Tensor:
    """What the intervention adds to every steered position: scale x norm x unit vector."""
    amount = float(iv.scale) * float(norms[iv.layer])  # in double, then applied in float32
    return unit_direction(iv.vector, vectors, iv.layer, d_model) * amount


class RowSteering:
    """Per-row additive deltas for one batch; `phase` says which part of the text is passing.

    Phases: "prompt" (a whole prompt in one pass), or, in generation, "prefix" (the prompt but
    its last token), "last" (the last prompt token, whose output is the first new token) and
    "generated" (one new token per step). positions "prompt" steers every prompt token,
    "generated" steers from the last prompt token on, "all" both.
    """

    def __init__(self, rows: Sequence[Sequence[Intervention]], vectors, norms: torch.Tensor,
                 d_model: int, device, dtype):
        self.phase = "prompt"
        self.batch = len(rows)
        cache: dict[Intervention, torch.Tensor] = {}
        deltas: dict[int, torch.Tensor] = {}
        modes: dict[int, torch.Tensor] = {}
        for r, ivs in enumerate(rows):
            for iv in ivs:
                if iv.scale == 0:
                    continue
                if iv not in cache:
                    cache[iv] = delta(iv, vectors, norms, d_model)
                if iv.layer not in deltas:
                    deltas[iv.layer] = torch.zeros(self.batch, d_model)
                    modes[iv.layer] = torch.zeros(self.batch, dtype=torch.long)
                deltas[iv.layer][r] += cache[iv]
                modes[iv.layer][r] = POSITIONS.index(iv.positions)
        self.deltas = {k: v.to(device=device, dtype=dtype)[:, None, :] for k, v in deltas.items()}
        # in decoding, when every row is steered on generated positions the mask is all ones
        # and the hook is a plain add (most sweeps: positions "all")
        self.dense = {k: bool((v != POSITIONS.index("prompt")).all()) for k, v in modes.items()}
        self.modes = {k: v.to(device) for k, v in modes.items()}

    def _mask(self, layer: int, seq_len: int, device) -> torch.Tensor:
        mode = self.modes[layer][:, None]  # [B, 1]: 0 all, 1 prompt, 2 generated
        if self.phase == "prompt":
            last = torch.zeros(1, seq_len, dtype=torch.bool, device=device)
            last[0, -1] = True
            return (mode != 2) | last
        if self.phase == "prefix":
            on = mode != 2
        elif self.phase == "last":
            on = torch.ones_like(mode, dtype=torch.bool)
        elif self.phase == "generated":
            on = mode != 1
        else:
            raise SteeringError(f"unknown phase {self.phase!r}")
        return on.expand(-1, seq_len)

    def masked_delta(self, layer: int, seq_len: int, device) -> torch.Tensor:
        """[B, seq_len, d]: what the current phase adds at `layer` (zeros where it steers not)."""
        d = self.deltas[layer]
        return d * self._mask(layer, seq_len, device)[:, :, None].to(d.dtype)

    def hook_fn(self, layer: int):
        d = self.deltas[layer]

        def fn(x: torch.Tensor, hook=None) -> torch.Tensor:
            if x.shape[0] != d.shape[0] and d.shape[0] != 1:
                raise SteeringError(
                    f"steering prepared for {d.shape[0]} rows, batch has {x.shape[0]}")
            if self.phase == "last" or (self.phase == "generated" and self.dense[layer]):
                return x + d.to(x.dtype)  # rows without steering add exact zeros
            on = self._mask(layer, x.shape[1], x.device)
            return torch.where(on[:, :, None], x + d.to(x.dtype), x)

        return fn


@contextmanager
def steer_rows(model, rows: Sequence[Sequence[Intervention]], vectors) -> Iterator[RowSteering]:
    """Register per-row steering hooks on `model`; they are removed on exit, even on error."""
    rs = RowSteering(rows, vectors, model.resid_norms(), model.d_model, model.device, model.dtype)
    hooks = [(model.resid_hook(layer), rs.hook_fn(layer)) for layer in sorted(rs.deltas)]
    for layer in rs.deltas:
        if not 0 <= layer < model.n_layers:
            raise SteeringError(f"layer {layer} is outside 0..{model.n_layers - 1}")
    with model.bridge.hooks(fwd_hooks=hooks):
        yield rs


@contextmanager
def steering(model, interventions: Intervention | Sequence[Intervention], vectors=None
             ) -> Iterator[RowSteering]:
    """Steer every forward pass inside the block, whatever its batch size (`m.forward`,
    `m.bridge(...)`, `steer.generate`); the hooks are removed on exit, even on error.

    Example:
        >>> import steer, torch
        >>> m = steer.load_model("tiny-random")
        >>> ev = steer.emotion_vectors(m, quiet=True)
        >>> ids, mask = m.encode(["The tests keep failing."])
        >>> plain, _ = m.forward(ids, mask)
        >>> with steer.steering(m, [steer.Intervention("desperate", 2, 0.5)], ev):
        ...     steered, _ = m.forward(ids, mask)
        >>> bool((steered != plain).any()), bool((m.forward(ids, mask)[0] == plain).all())
        (True, True)
    """
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    # One row of deltas, broadcast over any batch.
    with steer_rows(model, [list(interventions)], vectors) as rs:
        yield rs


class _PerThread:
    """A `{layer: activations}` mapping of which each thread sees its own."""

    def __init__(self):
        self._local = threading.local()

    @property
    def _d(self) -> dict[int, torch.Tensor]:
        if not hasattr(self._local, "d"):
            self._local.d = {}
        return self._local.d

    def __setitem__(self, layer: int, x: torch.Tensor) -> None:
        self._d[layer] = x

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self._d[layer]

    def __contains__(self, layer: object) -> bool:
        return layer in self._d


@contextmanager
def capture(model, layers: Sequence[int], per_thread: bool = False
            ) -> Iterator[dict[int, torch.Tensor]]:
    """Record the residual stream after each of `layers` on the next forward passes.

    Yields a dict that fills with `{layer: activations}` (the latest pass overwrites). With
    `per_thread`, forward passes running in several threads at once each fill their own.

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> ids, mask = m.encode(["Hello there."])
        >>> with steer.capture(m, [1, 3]) as acts:
        ...     _ = m.forward(ids, mask)
        >>> sorted(acts), acts[3].shape[-1]
        ([1, 3], 64)
    """
    store: dict[int, torch.Tensor] | _PerThread = _PerThread() if per_thread else {}

    def make(layer: int):
        def fn(x: torch.Tensor, hook=None):
            store[layer] = x.detach()
            return x

        return fn

    with model.bridge.hooks(fwd_hooks=[(model.resid_hook(L), make(L)) for L in layers]):
        yield store  # type: ignore[misc]
