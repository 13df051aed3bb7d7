"""The Textual face of fibtui; `run_tui` is the entry point."""

from fibtui.tui.app import FibApp, run_tui

__all__ = ["FibApp", "run_tui"]
