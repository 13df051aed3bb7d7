"""Model files: the training checkpoint (full state, to resume) and the final model (weights + config).

Both are written aside and renamed, so a job killed mid-write leaves the old
file, never half of a new one. `load_model` rebuilds the network from the
config stored with the weights, and applies it as it was validated (its
test-time flips), in channels_last_3d: a checkpoint needs no spec to be used.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch

from remote.model import LAYOUT, UNet3D, UNetConfig
from sessions.jobfiles import atomic_write_bytes

CHECKPOINT, MODEL = "checkpoint.pt", "model.pt"


def save(obj, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def load_model(path: str | Path, device="cpu") -> tuple[UNet3D, dict]:
    ck = torch.load(path, map_location=device, weights_only=False)
    model = UNet3D(UNetConfig.from_dict(ck["config"]))
    model.load_state_dict(ck["model"])
    model.tta = ck.get("tta", "none")  # models saved before test-time flips were applied as one pass
    return model.to(device, memory_format=LAYOUT), ck
