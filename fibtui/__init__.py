"""fibtui: the face (CLI and Textual app) over `sessions` (state) and `remote` (execution)."""

__version__ = "0.1.0"
