"""Steering directions: expressions such as `desperate - 0.5*calm`, and `Direction` objects that
do the same arithmetic in Python (`ev["desperate"] - 0.5 * ev["calm"]`).

A direction at a layer is the normalized sum of its terms, each term's vector first normalized
at that layer; a single term is its own unit vector. `random-K` names a seeded random unit
direction, the control every steering effect is compared with.

Parsing needs no torch, so that `steer validate` starts fast; torch is imported where tensors
are made.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from steer.errors import SteeringError

if TYPE_CHECKING:
    import torch

POSITIONS = ("all", "prompt", "generated")
RANDOM = re.compile(r"^random-(\d+)$")
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([A-Za-z][\w\- ]*?)\s*$")


def parse_expression(expr: str) -> list[tuple[float, str]]:
    """The terms of a vector expression, as (coefficient, name) pairs.

    Names may contain spaces and hyphens (`at ease`, `grief-stricken`), so a minus sign counts as
    an operator only with whitespace around it or at the start.

    Example:
        >>> parse_expression("desperate - 0.5*calm")
        [(1.0, 'desperate'), (-0.5, 'calm')]
    """
    expr = expr.strip()
    if not expr:
        raise SteeringError("empty vector expression")
    parts = re.split(r"(?:^|\s+)([+-])\s+", " " + expr if expr[0] in "+-" else expr)
    terms: list[tuple[float, str]] = []
    sign = 1.0
    for part in parts:
        if part in ("+", "-"):
            sign = -1.0 if part == "-" else 1.0
            continue
        if not part.strip():
            continue
        m = _TERM.match(part)
        if not m:
            raise SteeringError(f"cannot parse vector term {part!r} in {expr!r}")
        coef = float(m.group(1)) if m.group(1) else 1.0
        terms.append((sign * coef, m.group(2).strip()))
        sign = 1.0
    if not terms:
        raise SteeringError(f"no vector named in {expr!r}")
    return terms


def combine_terms(terms: list[tuple[float, str]], key=str.strip) -> list[tuple[float, str]]:
    """Terms that name the same vector (after `key`, e.g. the catalog's canonical name) added
    together, and those whose coefficients cancel dropped: an empty list means the expression
    is zero whatever the vectors are.

    Example:
        >>> combine_terms(parse_expression("2*calm - calm - calm"))
        []
        >>> combine_terms(parse_expression("desperate - 0.5*calm + 0.5*calm - calm"))
        [(1.0, 'desperate'), (-1.0, 'calm')]
    """
    total: dict[str, float] = {}
    for coef, name in terms:
        k = key(name)
        total[k] = total.get(k, 0.0) + coef
    scale = max((abs(c) for c, _ in terms), default=0.0)
    # 0.1 + 0.2 - 0.3 is 5.6e-17, not 0: cancellation is judged relative to the terms' size
    return [(c, k) for k, c in total.items() if abs(c) > 1e-9 * scale]


def format_expression(terms: list[tuple[float, str]]) -> str:
    """The expression text of (coefficient, name) terms; `parse_expression` reads it back.

    Example:
        >>> format_expression([(1.0, "desperate"), (-0.5, "calm")])
        'desperate - 0.5*calm'
    """
    out = []
    for i, (coef, name) in enumerate(terms):
        size = "" if abs(coef) == 1 else f"{abs(coef):g}*"
        sign = ("- " if coef < 0 else "") if i == 0 else (" - " if coef < 0 else " + ")
        out.append(f"{sign}{size}{name}")
    return "".join(out)


class Direction:
    """A steering direction over named vectors: a weighted sum whose terms are each normalized
    per layer, usable wherever an expression string is (`steer.Intervention(d, ...)`).

    Made by indexing emotion vectors (`ev["calm"]`) and combined with `+`, `-`, unary `-`, and
    multiplication or division by a number. Each term keeps the vector set it came from, so
    directions from different sets (built, imported from a GGUF file) combine too.

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> ev = steer.emotion_vectors(m, quiet=True)
        >>> d = ev["desperate"] - 0.5 * ev["calm"]
        >>> d
        Direction('desperate - 0.5*calm')
        >>> round(float(d.unit(2).norm()), 6)
        1.0
    """

    def __init__(self, terms: list[tuple[float, str, Any]]):
        if not terms:
            raise SteeringError("a direction needs at least one term")
        self.terms = [(float(c), str(n), src) for c, n, src in terms]

    @property
    def name(self) -> str:
        """The direction as an expression (`desperate - 0.5*calm`)."""
        return format_expression([(c, n) for c, n, _ in self.terms])

    def __repr__(self) -> str:
        return f"Direction({self.name!r})"

    def __add__(self, other: Direction) -> Direction:
        if not isinstance(other, Direction):
            return NotImplemented
        return Direction(self.terms + other.terms)

    def __sub__(self, other: Direction) -> Direction:
        if not isinstance(other, Direction):
            return NotImplemented
        return self + (-other)

    def __neg__(self) -> Direction:
        return self * -1.0

    def __mul__(self, k: float) -> Direction:
        if not isinstance(k, (int, float)) or isinstance(k, bool):
            return NotImplemented
        return Direction([(c * k, n, src) for c, n, src in self.terms])

    __rmul__ = __mul__

    def __truediv__(self, k: float) -> Direction:
        if not isinstance(k, (int, float)) or isinstance(k, bool) or k == 0:
            return NotImplemented
        return self * (1.0 / k)

    def unit(self, layer: int) -> torch.Tensor:
        """The unit-length float32 direction at `layer`; SteeringError if a term's vector is
        zero or not finite there, or if the terms (nearly) cancel."""
        import torch

        units = []
        for coef, name, src in self.terms:
            v = src.get(name, layer).float()
            n = v.norm()
            if not torch.isfinite(n) or float(n) == 0.0:
                raise SteeringError(f"vector {name!r} is {'zero' if n == 0 else 'not finite'} "
                                    f"at layer {layer}: choose another layer or vector")
            units.append((coef, v / n))
        if len(units) == 1 and units[0][0] != 0:
            return units[0][1] * (1.0 if units[0][0] > 0 else -1.0)
        total = sum(coef * v for coef, v in units)
        n = float(total.norm())
        # float32 leaves ~1e-7 of a cancelled sum: anything that small is no direction at all
        if not n > 1e-4 * sum(abs(c) for c, _ in units):
            raise SteeringError(f"vector expression {self.name!r} sums to (nearly) zero at "
                                f"layer {layer}: its terms cancel out")
        return total / n


def random_direction(seed: int, d_model: int) -> torch.Tensor:
    """The seeded random unit direction `random-<seed>` of width `d_model`.

    Example:
        >>> v = random_direction(0, 8)
        >>> round(float(v.norm()), 6), bool((v == random_direction(0, 8)).all())
        (1.0, True)
    """
    import torch

    g = torch.Generator().manual_seed(1_000_003 + seed)
    v = torch.randn(d_model, generator=g, dtype=torch.float32)
    return v / v.norm()


def unit_direction(vector: str | Direction, vectors, layer: int, d_model: int) -> torch.Tensor:
    """Unit-length float32 direction at `layer` of an expression (resolved against `vectors`),
    of `random-K`, or of a `Direction`."""
    if isinstance(vector, Direction):
        return vector.unit(layer)
    m = RANDOM.match(vector.strip())
    if m:
        return random_direction(int(m.group(1)), d_model)
    terms = parse_expression(vector)
    if vectors is None:
        raise SteeringError(f"vector {terms[0][1]!r} needs emotion vectors, and none are loaded")
    return Direction([(c, n, vectors) for c, n in terms]).unit(layer)


def check_directions(expressions, vectors, layers, d_model: int) -> None:
    """Build every direction of a run once, before any cell: a SteeringError (bad input, exit
    2) names the expression and layer whose direction is zero, instead of every cell failing.

    Example:
        >>> import steer
        >>> m = steer.load_model("tiny-random")
        >>> ev = steer.emotion_vectors(m, quiet=True)
        >>> check_directions(["desperate", "calm - desperate"], ev, [1, 2], m.d_model)
    """
    for expr in expressions:
        for layer in layers:
            unit_direction(expr, vectors, layer, d_model)


def label(vector: str | Direction) -> str:
    """How a direction is named in tables and files."""
    return vector.name if isinstance(vector, Direction) else vector
