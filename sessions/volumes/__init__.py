"""Volumes: source readers, the ingest engine and its shard writer, OME-Zarr, and the viewer's read path.

`catalog` is the session-facing side (register, look up, ingest into a session);
the rest work on stores and files and know nothing of sessions.
"""
