"""The state layer: session workspace, SQLite store, volumes, crops, rounds.

Imports neither `fibtui` nor `textual` nor `remote`.
"""

from sessions.errors import FibError

__all__ = ["FibError"]
