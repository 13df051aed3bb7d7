"""A round's model as a file other tools run: TorchScript or ONNX, with what it needs written beside it.

The exported network takes intensities (float32, 0–255, shape 1×1×Z×Y×X, each
extent a multiple of `divisor`) and returns the probability of the target
class. Whatever the session does to a voxel on its own is inside the exported
graph, so nobody has to re-implement it: the normalisation (x / 127.5 − 1)
and, for a `percentile` model, the stretch the training measured (the same
256-entry lookup table `remote.preprocess` applies, so the values are exact).
`clahe` and `denoise` depend on a voxel's whole z-slice: they cannot be in a
graph that sees blocks, so the model takes preprocessed intensities and the
sidecar says how to make them.

The sidecar JSON records the voxel size the model was trained at, the divisor,
the halo a blockwise user must add (the receptive radius), the preprocessing
(the record, what is inside the model and what the caller must do before),
the target class and the training job and code it came from.

The bioimage.io package of an export is remote/bioimageio.py.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from remote.checkpoints import load_model
from remote.model import UNet3D, normalize
from remote.predict import receptive_radius
from remote.preprocess import wrap
from sessions.errors import FibError
from sessions.jobfiles import atomic_write_bytes, atomic_write_json

FORMATS = {"torchscript": ".pt", "onnx": ".onnx"}
OPSET = 17
PER_SLICE = ("clahe", "denoise")  # preprocessings of whole z-slices: the caller's job, never the graph's


def check_format(fmt: str) -> None:
    """Refuse an unknown format before anything is read or written."""
    if fmt not in FORMATS:
        raise FibError(f"--format {fmt!r}: choose {' or '.join(FORMATS)}")


class Exported(nn.Module):
    """[lookup table →] normalise → U-Net → sigmoid, the session's own path from voxels to a probability."""

    def __init__(self, net: UNet3D, lut: torch.Tensor | None):
        super().__init__()
        self.net = net
        self.register_buffer("lut", lut)

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        if self.lut is not None:
            raw = self.lut[raw.clamp(0, 255).round().long()]
        return torch.sigmoid(self.net(normalize(raw)))


def record_of(ck: dict) -> dict:
    """The model's preprocessing record; a model file older than preprocessing had none."""
    return ck.get("preprocess") or {"method": "none"}


def pointwise_lut(rec: dict) -> torch.Tensor | None:
    """The percentile stretch as a float32 table of the 256 voxel values, computed by `remote.preprocess` itself."""
    if rec["method"] != "percentile":
        return None
    return torch.from_numpy(wrap(np.arange(256, dtype=np.uint8), rec, None)[:].astype(np.float32))


def preprocessing_info(rec: dict) -> dict:
    """The sidecar's "preprocessing": the record, the steps inside the model, and what the caller must do first."""
    steps = []
    if rec["method"] == "percentile":
        lo, hi = rec["lo_value"], rec["hi_value"]
        steps.append(f"percentile stretch of the training volume's p{rec['low']:g}–p{rec['high']:g}: "
                     f"v → round(clip((v − {lo:g}) / ({hi:g} − {lo:g}) × 255, 0, 255)), a 256-entry lookup table")
    steps.append("x / 127.5 − 1 (the session's normalize)")
    before = None
    if rec["method"] in PER_SLICE:
        params = ", ".join(f"{k} {v:g}" for k, v in rec.items() if k != "method")
        before = (f"{rec['method']} ({params}) depends on whole z-slices, so it is not inside the model: apply "
                  f"remote.preprocess.slice_filter(record, slice) to every whole z-slice of the uint8 volume, "
                  f"then cut blocks from the result")
    return {"record": rec, "input": "preprocessed" if before else "raw", "in_model": steps, "before_model": before}


def warning(side: dict) -> str | None:
    """One line for the person exporting when the model cannot be fed raw voxels."""
    pre = side["preprocessing"]
    if pre["before_model"] is None:
        return None
    return (f"this model was trained on {pre['record']['method']}-preprocessed voxels: its input must be "
            f"preprocessed first, per whole z-slice (remote.preprocess.slice_filter; the record is in the sidecar)")


def example_input(net: UNet3D) -> torch.Tensor:
    """The smallest input the net takes whole: twice its divisor per axis."""
    return torch.zeros((1, 1, *(2 * d for d in net.cfg.divisor)), dtype=torch.float32)


def export(checkpoint: Path, fmt: str, out: Path, about: dict) -> dict:
    """Write the model to `out` (aside, then renamed) and `out`.json beside it; return the sidecar."""
    check_format(fmt)
    net, ck = load_model(checkpoint, "cpu")
    rec = record_of(ck)
    model = Exported(net.eval(), pointwise_lut(rec)).eval()
    x = example_input(net)
    tmp = out.with_name(f".{out.name}.partial")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # both are the TorchScript-based paths, still read everywhere
        if fmt == "torchscript":
            torch.jit.trace(model, x).save(str(tmp))
        else:
            torch.onnx.export(model, (x,), str(tmp), input_names=["raw"], output_names=["probability"],
                              dynamic_axes={"raw": {2: "z", 3: "y", 4: "x"}, "probability": {2: "z", 3: "y", 4: "x"}},
                              dynamo=False, opset_version=OPSET)
    atomic_write_bytes(out, tmp.read_bytes())
    tmp.unlink()
    side = {
        "format": fmt, "file": out.name, "input": {"name": "raw", "dtype": "float32", "range": [0, 255],
                                                   "axes": "bczyx", "divisor": list(net.cfg.divisor)},
        "output": {"name": "probability", "dtype": "float32", "axes": "bczyx",
                   "meaning": f"probability of class {ck.get('target_name')!r}"},
        "preprocessing": preprocessing_info(rec),
        "test_time_flips": net.tta,  # inside the exported graph: its output is already the flips' average
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
