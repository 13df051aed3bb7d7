"""One clock for everything the session records: UTC, ISO 8601, second precision."""

from datetime import datetime, timezone


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
