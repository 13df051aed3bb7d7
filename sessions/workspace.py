"""A session is a directory: `session.sqlite` plus the artefacts it indexes.

Layout: `session.sqlite`, `volumes/<name>.ome.zarr`, `rounds/<n>/crops/<id>.zarr`,
`holdout/<id>.zarr`, `jobs/<id>/`, `exports/`. The CLI/TUI process is the only
writer of the SQLite file; jobs write only inside their own job directory.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from sessions.errors import FibError
from sessions.migrations import migrations
from sessions.timeutil import now

DB_NAME = "session.sqlite"
SUBDIRS = ("volumes", "rounds", "holdout", "jobs", "exports")


@dataclass
class Session:
    root: Path
    db: Database

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def rel(self, p: Path) -> str:
        """Artefact paths are stored relative to the session so it can be moved."""
        return str(Path(p).resolve().relative_to(self.root.resolve()))

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("select value from meta where key = ?", [key]).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value) -> None:
        self.db["meta"].upsert({"key": key, "value": json.dumps(value) if not isinstance(value, str) else value}, pk="key")

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def write(self):
        """A transaction that takes the write lock before it reads (BEGIN IMMEDIATE).

        The CLI and a TUI may fold the same job's events at the same time; the
        one that reads the byte offset must be the one that writes it.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")


def _connect(db_path: Path) -> Database:
    db = Database(db_path)
    # Rollback journal, not WAL: WAL is unsafe on the network filesystems
    # (NFS/GPFS/Lustre) that cluster project directories live on.
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=5000")
    return db


def init_session(root: str | Path) -> Session:
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise FibError(f"{root}: exists and is not a directory; choose another session path")
    if (root / DB_NAME).exists():
        raise FibError(f"{root}: already a fibtui session; open it with --session {root}")
    if root.exists() and any(root.iterdir()):
        raise FibError(f"{root}: directory is not empty; give a new or empty directory for the session")
    try:
        root.mkdir(parents=True, exist_ok=True)
        for d in SUBDIRS:
            (root / d).mkdir(exist_ok=True)
    except OSError as e:
        raise FibError(f"{root}: cannot create the session directory ({e.strerror})") from None
    tmp = root / (DB_NAME + ".partial")
    tmp.unlink(missing_ok=True)
    db = _connect(tmp)
    migrations.apply(db)
    db["meta"].insert_all([{"key": "created", "value": now()}, {"key": "format", "value": "1"}])
    db.close()
    tmp.replace(root / DB_NAME)
    return open_session(root)


def open_session(root: str | Path) -> Session:
    root = Path(root).expanduser()
    if not root.exists():
        raise FibError(f"{root}: no such session directory; create one with `fibtui init {root}`")
    if not (root / DB_NAME).is_file():
        raise FibError(f"{root}: not a fibtui session (no {DB_NAME}); create one with `fibtui init <dir>`")
    try:
        db = _connect(root / DB_NAME)
        db.execute("select count(*) from sqlite_master").fetchone()
    except Exception as e:  # sqlite3.DatabaseError for a file that is not SQLite
        raise FibError(f"{root / DB_NAME}: not a readable SQLite file ({e}); restore it from a backup") from None
    migrations.apply(db)  # bring older sessions up to the current schema
    for d in SUBDIRS:
        (root / d).mkdir(exist_ok=True)
    return Session(root=root.resolve(), db=db)
