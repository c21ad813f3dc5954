"""Vector expressions such as `desperate - 0.5*calm`.

Kept free of torch so that `steer validate` starts fast."""

from __future__ import annotations

import re

from steer.errors import SteeringError

POSITIONS = ("all", "prompt", "generated")
RANDOM = re.compile(r"^random-(\d+)$")
_TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([A-Za-z][\w\- ]*?)\s*$")


def parse_expression(expr: str) -> list[tuple[float, str]]:
    """`"desperate - 0.5*calm"` -> `[(1.0, "desperate"), (-0.5, "calm")]`.

    Names may contain spaces and hyphens (`at ease`, `grief-stricken`), so a minus sign counts as
    an operator only with whitespace around it or at the start."""
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
