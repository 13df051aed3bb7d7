"""The slice viewer's parts: what a frame shows (frame), what the curator draws on it (overlay)."""
