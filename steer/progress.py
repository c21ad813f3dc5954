"""Progress for long work: a rich bar on a terminal, plain lines otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


@contextmanager
def task(label: str, total: int, quiet: bool = False) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)`. Plain mode prints at most every ~10% (and at the end)."""
    if quiet:
        yield lambda n: None
        return
    if console.is_terminal:
        cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*cols, console=console, transient=False) as prog:
            tid = prog.add_task(label, total=total)
            yield lambda n: prog.advance(tid, n)
        return
    done, last, start = 0, -1, time.perf_counter()

    def advance(n: int) -> None:
        nonlocal done, last
        done += n
        decile = int(10 * done / max(total, 1))
        if decile != last or done >= total:
            last = decile
            print(f"{label}: {done}/{total} ({time.perf_counter() - start:.0f} s)",
                  file=sys.stderr, flush=True)

    yield advance
