"""Package data: the emotion catalog, the built-in corpus and the built-in task suites."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(*parts: str) -> Path:
    """A file shipped in steer/data, e.g. `data_path("suites", "blackmail.jsonl")`."""
    return Path(str(resources.files("steer.data").joinpath(*parts)))
