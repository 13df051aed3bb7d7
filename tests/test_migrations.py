"""An older session file opens with the current code: its rows survive every migration."""

from sessions.migrations import migrations
from sessions.workspace import DB_NAME, SUBDIRS, _connect, open_session


def test_session_from_before_issue_3_keeps_its_volume_crops_and_checksum(tmp_path):
    root = tmp_path / "old"
    for d in SUBDIRS:
        (root / d).mkdir(parents=True)
    db = _connect(root / DB_NAME)
    migrations.apply(db, stop_before="m003_volume_provenance")
    db["volumes"].insert({"name": "v", "path": "volumes/v.ome.zarr", "shape": "4,8,8", "dtype": "uint8",
                          "voxel_size": "8,8,8", "levels": 2, "source": "/data/v.tif", "source_sha256": "ab" * 32,
                          "created": "2026-11-01"})
    db["rounds"].insert({"n": 1, "created": "2026-11-01", "status": "open"})
    db["crops"].insert({"id": 1, "round": 1, "volume": "v", "path": "rounds/1/crops/1.zarr", "offset": "0,0,0",
                        "shape": "2,4,4", "labelled_voxels": 32, "created": "2026-11-01"})
    db.close()

    s = open_session(root)
    vol = s.db["volumes"].get("v")
    assert vol["source_checksum"] == "sha256:" + "ab" * 32
    assert vol["conversion"] is None and vol["plan"] is None
    assert s.db["crops"].get(1)["volume"] == "v"
    assert s.db.execute("pragma foreign_key_check").fetchall() == []
