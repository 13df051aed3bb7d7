"""Console output: rich for people, `--json` for scripts, progress bars for long work."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def table(title: str | None, columns: list[str], rows: list[list]) -> Table:
    t = Table(title=title, title_justify="left", header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


@contextmanager
def progress(enabled: bool = True) -> Iterator[Progress]:
    """Bars with elapsed time, ETA, and what the caller reports in `info` (e.g. throughput)."""
    cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, console=err_console, disable=not enabled, transient=False) as p:
        yield p


def stage_callback(p: Progress):
    """A `progress(stage, done, total)` callback that keeps one bar per stage."""
    tasks: dict[str, int] = {}

    def cb(stage: str, done: int, total: int, info: str = "") -> None:
        if stage not in tasks:
            tasks[stage] = p.add_task(stage, total=total, info=info)
        p.update(tasks[stage], completed=done, total=total, info=info)

    return cb
