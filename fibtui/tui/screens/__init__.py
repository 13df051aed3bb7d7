"""Screens of the TUI: the session overview, the slice viewer, dialogs."""
