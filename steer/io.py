"""Files: the one atomic-write helper, the one JSONL reader, and where caches live.

Every file steer writes goes through `atomic_writer` (a temporary sibling, fsync, rename), so a
crash never leaves a truncated file behind; every JSONL file it reads goes through `read_jsonl`,
whose errors name the file and the line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from steer.errors import InputError

TMP_SUFFIX = ".tmp"  # temporary files are named `.<name>.<pid>.tmp`


def cache_dir() -> Path:
    """Where models, vectors and norms are cached: $STEER_CACHE, default ~/.cache/steer."""
    return Path(os.environ.get("STEER_CACHE", Path.home() / ".cache" / "steer"))


@contextmanager
def atomic_writer(path: str | Path) -> Iterator[Path]:
    """Yields a temporary path beside `path`; once the body has written it, it is fsynced and
    renamed over `path`. On error the temporary file is removed and `path` is untouched.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_writer(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    with atomic_writer(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def atomic_dir(target: Path, write: Callable[[Path], None]) -> None:
    """Fill a folder in a temporary sibling with `write(tmp)`, then rename it into place (no
    half-written caches). If another process got there first, its folder is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        write(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process won the race; theirs is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_text(path: str | Path, label: str, error: type[InputError] = InputError) -> str:
    """A UTF-8 text file's contents; `error` (naming the file) if it is missing, a folder, or
    not UTF-8 text."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{label}: no such file: {p}")
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise error(f"{p}: not a UTF-8 text file") from None
    except OSError as e:
        raise error(f"cannot read {label} file {p}: {e.strerror}") from None


def read_jsonl(path: str | Path, label: str, error: type[InputError] = InputError
               ) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a JSONL file; `error` with
    `file:line` for a line that is not a JSON object.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x.jsonl"
        >>> _ = p.write_text('{"text": "hi"}\\n\\n{"text": "yo"}\\n')
        >>> read_jsonl(p, "texts")
        [(1, {'text': 'hi'}), (3, {'text': 'yo'})]
    """
    rows = []
    for n, line in enumerate(read_text(path, label, error).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise error(f"{path}:{n}: expected a JSON object per line")
        rows.append((n, row))
    return rows


def write_frame(df, path: str | Path) -> Path:
    """A DataFrame as CSV (a .csv path) or Parquet (anything else), atomically, no index."""
    path = Path(path)
    with atomic_writer(path) as tmp:
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return path


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    with atomic_writer(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
