import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny():
    """The 4-layer random-init Llama used by unit tests (same weights every time)."""
    from steer.lm.load import load_model

    torch.set_num_threads(2)
    return load_model("tiny-random", device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def tiny_vectors(tiny):
    from steer.vectors.corpus import load_corpus
    from steer.vectors.store import build_or_load

    return build_or_load(tiny, load_corpus())


@pytest.fixture(scope="session")
def smol():
    from steer.lm.load import load_model

    return load_model("smollm2-135m-instruct", device="cpu", dtype="float32")


def steer_cli(*args, cwd=ROOT, timeout=600, env=None):
    """Run the real `steer` console script in a subprocess."""
    exe = shutil.which("steer", path=str(Path(sys.executable).parent)) or "steer"
    return subprocess.run([exe, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200", **(env or {})})


def generate_fast_and_bridge(model, rows, vectors, sampling, batch_size):
    """The same generation on the plain fast path and through the bridge alone."""
    from steer.lm.decode import generate_rows

    fast = generate_rows(model, rows, vectors, sampling, batch_size=batch_size)
    plain, model.plain = model.plain, None
    try:
        slow = generate_rows(model, rows, vectors, sampling, batch_size=batch_size)
    finally:
        model.plain = plain
    return fast, slow
