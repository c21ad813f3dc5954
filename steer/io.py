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
    """A UTF-8 text file's contents; `error` naming the file (and the line of the first byte
    that is not UTF-8) if it is missing, a folder, a device or pipe, or not UTF-8 text.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "p.txt").write_bytes(b"fine\\n\\xff\\n")
        >>> for p in (d / "p.txt", d, d / "nope.txt"):
        ...     try:
        ...         read_text(p, "prompts")
        ...     except InputError as e:
        ...         print(str(e).replace(str(d), "D"))
        D/p.txt:2: not UTF-8 text (prompts file)
        D: a folder, not a prompts file
        D/nope.txt: no such prompts file
    """
    p = Path(path)
    if p.is_dir():
        raise error(f"{p}: a folder, not a {label} file")
    if not p.is_file():
        raise error(f"{p}: no such {label} file" if not p.exists() else
                    f"{p}: not a regular file (a {label} file is read whole)")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise error(f"{p}: cannot read the {label} file ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise error(f"{p}:{line}: not UTF-8 text ({label} file)") from None


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


FRAME_SUFFIXES = (".parquet", ".csv", ".jsonl")


def write_frame(df, path: str | Path) -> Path:
    """A DataFrame in the format its file name ends in (.parquet, .csv or .jsonl, one object per
    row), atomically, no index; InputError for any other ending (no Parquet in a .txt)."""
    path = Path(path)
    if path.suffix not in FRAME_SUFFIXES:
        kind = path.suffix or "a file without an extension"
        raise InputError(f"{path}: cannot write a table as {kind}; use a name ending in "
                         f"{', '.join(FRAME_SUFFIXES)}")
    with atomic_writer(path) as tmp:
        if path.suffix == ".csv":
            df.to_csv(tmp, index=False)
        elif path.suffix == ".jsonl":
            df.to_json(tmp, orient="records", lines=True, force_ascii=False)
        else:
            df.to_parquet(tmp, index=False)
    return path


def check_writable(path: str | Path, label: str = "--out", suffixes: tuple[str, ...] = (),
                   folder: bool = False) -> Path:
    """`path`, once it is sure that it can be written (checked before any work, so that hours
    of it are not lost to a typo): a name ending in one of `suffixes` (if given), not a folder
    (or, with `folder`, not a file), in a folder that exists or can be made, and that accepts a
    file. Missing folders are made when the output is written, not here.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> check_writable(d / "new" / "x.csv", suffixes=(".csv",)) == d / "new" / "x.csv"
        True
        >>> try:
        ...     check_writable(d / "x.txt", suffixes=(".csv", ".parquet"))
        ... except InputError as e:
        ...     print(str(e).replace(str(d), "D"))
        --out D/x.txt: expected a file name ending in .csv or .parquet
    """
    p = Path(path)
    if suffixes and p.suffix not in suffixes:
        raise InputError(f"{label} {p}: expected a file name ending in "
                         + " or ".join(suffixes))
    if folder and p.exists() and not p.is_dir():
        raise InputError(f"{label} {p}: a file, expected a folder")
    if not folder and p.is_dir():
        raise InputError(f"{label} {p}: a folder, expected a file name")
    existing = p if folder else p.parent
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{label} {p}: {existing} is a file, not a folder")
    try:  # a real write: permission bits say nothing for root or on a read-only mount
        fd, probe = tempfile.mkstemp(prefix=".steer-probe.", suffix=TMP_SUFFIX, dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise InputError(f"{label} {p}: cannot write in {existing} "
                         f"({e.strerror or type(e).__name__})") from None
    return p


def save_figure(fig, path: str | Path) -> Path:
    """Write a matplotlib figure as a PNG, atomically, and close it."""
    import matplotlib.pyplot as plt

    with atomic_writer(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def cache_notice(what: str, problem: object) -> None:
    """Say on one stderr line that a cache entry was unusable and is being rebuilt (a cache is
    ours to repair; a user's file would be an error instead)."""
    import sys

    reason = " ".join(str(problem).split()) or type(problem).__name__
    print(f"notice: {what} was unreadable ({reason}); rebuilding", file=sys.stderr, flush=True)


def discard_cache(path: str | Path) -> None:
    """Remove a damaged cache file or folder: renamed aside first (one atomic step, so no reader
    sees it half-deleted and `atomic_dir` can put a fresh copy in its place), then deleted.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()) / "entry"
        >>> _ = d.mkdir(), (d / "x.json").write_text("{")
        >>> discard_cache(d); d.exists()
        False
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    aside = path.with_name(f".{path.name}.{os.getpid()}.discarded{TMP_SUFFIX}")
    try:
        os.replace(path, aside)
    except OSError:
        return  # someone else moved it first
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)
