"""Widgets and renderers the screens are built from."""
