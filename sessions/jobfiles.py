"""The job directory contract, shared by the job side (writer) and the session (reader).

`spec.json` in (everything the job needs, absolute paths); `events.jsonl` out
(append-only: progress, loss, metrics, heartbeats); `result.json` when done;
`stdout.log`/`stderr.log`; checkpoints. Jobs never touch the SQLite file.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

SPEC, EVENTS, RESULT = "spec.json", "events.jsonl", "result.json"
STDOUT, STDERR = "stdout.log", "stderr.log"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write aside, fsync, rename: readers see the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path):
    with open(path) as fh:
        return json.load(fh)


def append_event(job_dir: Path, type_: str, **data) -> None:
    """One line per event, written with a single O_APPEND write so lines never interleave."""
    line = json.dumps({"t": time.time(), "type": type_, **data}, separators=(",", ":")) + "\n"
    fd = os.open(Path(job_dir) / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def read_events(job_dir: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete events after byte `offset`, and the offset to resume from.

    A trailing line without its newline is still being written: leave it for
    the next read. A corrupt line is skipped rather than blocking the stream.
    """
    path = Path(job_dir) / EVENTS
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    events = []
    for raw in data[:end].splitlines():
        try:
            events.append(json.loads(raw))
        except ValueError:
            continue
    return events, offset + end


def read_result(job_dir: Path) -> dict | None:
    try:
        return read_json(Path(job_dir) / RESULT)
    except FileNotFoundError:
        return None
    except ValueError:
        return {"status": "failed", "error": "result.json is corrupt"}


def tail(path: Path, lines: int = 20) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            return b"\n".join(fh.read().splitlines()[-lines:]).decode(errors="replace")
    except FileNotFoundError:
        return ""
