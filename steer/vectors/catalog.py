"""The emotion concepts steer knows, with the words their stories must avoid and their aliases."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import yaml


@lru_cache(maxsize=1)
def catalog() -> dict[str, dict]:
    text = resources.files("steer.data").joinpath("emotions.yaml").read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    return {k: {"avoid": list(v.get("avoid", [])), "aliases": list(v.get("aliases", []))}
            for k, v in data.items()}


def canonical(name: str) -> str:
    """The catalog id for a name or alias (`desperation` -> `desperate`), else the name."""
    key = name.strip().lower()
    cat = catalog()
    if key in cat:
        return key
    for eid, entry in cat.items():
        if key in entry["aliases"]:
            return eid
    return key
