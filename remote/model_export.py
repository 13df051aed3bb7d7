"""A round's model as a file other tools run: TorchScript or ONNX, with what it needs written beside it.

The exported network takes raw intensities (float32, 0–255, shape 1×1×Z×Y×X,
each extent a multiple of `divisor`) and returns the probability of the target
class: the normalisation the session applies in training, prediction and preview
is inside the exported graph, so nobody has to re-implement it. The sidecar JSON
records the voxel size the model was trained at, the divisor, the halo a
blockwise user must add (the receptive radius), the target class and the
training job and code it came from.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from remote.checkpoints import load_model
from remote.model import UNet3D, normalize
from remote.predict import receptive_radius
from sessions.errors import FibError
from sessions.jobfiles import atomic_write_bytes, atomic_write_json

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}


class Exported(nn.Module):
    """normalise → U-Net → sigmoid, the session's own path from uint8 voxels to a probability."""

    def __init__(self, net: UNet3D):
        super().__init__()
        self.net = net

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(normalize(raw)))


def example_input(net: UNet3D) -> torch.Tensor:
    """The smallest input the net takes whole: twice its divisor per axis."""
    return torch.zeros((1, 1, *(2 * d for d in net.cfg.divisor)), dtype=torch.float32)


def export(checkpoint: Path, fmt: str, out: Path, about: dict) -> dict:
    """Write the model to `out` (aside, then renamed) and `out`.json beside it; return the sidecar."""
    if fmt not in FORMATS:
        raise FibError(f"--format {fmt!r}: choose {' or '.join(FORMATS)}")
    net, ck = load_model(checkpoint, "cpu")
    model = Exported(net.eval()).eval()
    x = example_input(net)
    tmp = out.with_name(f".{out.name}.partial")
    with torch.no_grad():
        if fmt == "torchscript":
            torch.jit.trace(model, x).save(str(tmp))
        else:
            torch.onnx.export(model, (x,), str(tmp), input_names=["raw"], output_names=["probability"],
                              dynamic_axes={"raw": {2: "z", 3: "y", 4: "x"}, "probability": {2: "z", 3: "y", 4: "x"}},
                              dynamo=False, opset_version=17)
    atomic_write_bytes(out, tmp.read_bytes())
    tmp.unlink()
    side = {
        "format": fmt, "file": out.name, "input": {"name": "raw", "dtype": "float32", "range": [0, 255],
                                                   "axes": "bczyx", "divisor": list(net.cfg.divisor)},
        "output": {"name": "probability", "dtype": "float32", "axes": "bczyx",
                   "meaning": f"probability of class {ck.get('target_name')!r}"},
        "preprocessing": "inside the model: x / 127.5 - 1 (the session's normalize)",
        "halo": list(receptive_radius(net)), "voxel_size_nm": list(net.cfg.voxel_size),
        "architecture": net.cfg.to_dict(), "target": ck.get("target"), "target_name": ck.get("target_name"),
        "iterations": ck.get("iterations"), "seed": ck.get("seed"), **about,
    }
    atomic_write_json(out.with_name(out.name + ".json"), side)
    return side


def load(path: Path):
    """The exported model as a callable numpy → numpy (TorchScript via torch, ONNX via onnxruntime)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime

        sess = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda a: sess.run(None, {"raw": a.astype("float32")})[0]
    with warnings.catch_warnings():  # TorchScript is deprecated in favour of torch.export, still read everywhere
        warnings.simplefilter("ignore", DeprecationWarning)
        mod = torch.jit.load(str(path), map_location="cpu")
    return lambda a: mod(torch.from_numpy(a.astype("float32"))).detach().numpy()


def read_sidecar(path: Path) -> dict:
    return json.loads(Path(str(path) + ".json").read_text())
