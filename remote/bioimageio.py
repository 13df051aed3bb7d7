"""The bioimage.io model package of an exported model (`fibtui model export --bioimageio`).

A zip beside the model file: rdf.yaml in the 0.5 model format (written as
JSON, which is YAML 1.2, so no YAML writer is needed), the weights, test
tensors made by the session's own prediction path, a cover, a README and the
sidecar. It is validated with bioimageio.spec when that is installed, offline:
the description names no URL, so no check has anything to download.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import tempfile
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import tifffile
import torch

from remote.checkpoints import load_model
from remote.model import UNet3D, normalize
from remote.model_export import FORMATS, OPSET, PER_SLICE, record_of
from remote.predict import block_halo
from remote.preprocess import wrap
from remote.sampling import read_padded
from sessions.errors import FibError
from sessions.export import sha256
from sessions.geometry import Box
from sessions.volumes import omezarr

BIOIMAGEIO_FORMAT = "0.5.14"  # the model description format of bioimageio.spec 0.5.14 (any 0.5 reader takes it)
LICENSE = "CC-BY-4.0"  # bioimage.io's usual licence for weights; change it in rdf.yaml before uploading if yours differs
CITE = [{"text": "Çiçek Ö, Abdulkadir A, Lienkamp SS, Brox T, Ronneberger O. 3D U-Net: learning dense volumetric "
                 "segmentation from sparse annotation. MICCAI 2016.", "doi": "10.1007/978-3-319-46723-8_49"}]

def package_path(out: Path) -> Path:
    """The package beside the model file, named like the sidecar (`r1-mito.onnx.bioimageio.zip`)."""
    return out.with_name(out.name + ".bioimageio.zip")


def reference_tile(shape, halo, div) -> Box:
    """The smallest input the description allows (one divisor of core, the halo each side), centred in the
    volume on the pooling grid; an axis shorter than that is mirrored as the session's prediction does."""
    ext = [2 * h + d for h, d in zip(halo, div)]
    off = [max(0, (s - e) // 2) // d * d for s, e, d in zip(shape, ext, div)]
    return Box(tuple(off), tuple(ext))


def reference_tensors(net: UNet3D, rec: dict, volume_path: str, tile: Box) -> tuple[np.ndarray, np.ndarray]:
    """(input, output) of the tile, 1×1×Z×Y×X float32. The input is what the exported model takes (raw voxels,
    or preprocessed ones for a per-slice method); the output is the session's prediction path on the tile
    (its preprocessing, normalize, the net, sigmoid) before the uint8 rounding of the stored prediction,
    because bioimage.io compares float outputs to a 1e-3 tolerance."""
    raw = omezarr.open_multiscale(volume_path).levels[0]
    seen = wrap(raw, rec, volume_path)
    x = read_padded(seen if rec["method"] in PER_SLICE else raw, tile).astype(np.float32)[None, None]
    with torch.no_grad():
        y = torch.sigmoid(net(normalize(torch.from_numpy(np.ascontiguousarray(read_padded(seen, tile)))[None, None])))
    return x, y.numpy().astype(np.float32)


def write_cover(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    """The middle z-slice of the test input beside the predicted probability, 2:1 as bioimage.io asks."""
    from matplotlib.image import imsave

    z = x.shape[2] // 2
    img = np.concatenate([x[0, 0, z], y[0, 0, z] * 255.0], axis=1)
    imsave(path, img, cmap="gray", vmin=0, vmax=255)


def author() -> str:
    """The person exporting: the account's full name, else its login (no slash: bioimage.io refuses one)."""
    try:
        import pwd

        name = pwd.getpwuid(os.getuid()).pw_gecos.split(",")[0].strip()
    except (ImportError, KeyError):
        name = ""
    return (name or getpass.getuser()).replace("/", "-")


def _axes(side: dict, halo, div, output: bool) -> list[dict]:
    """bczyx with the voxel size as scale in nanometres; input sizes min + n·step, output sizes the input's."""
    channel = side["target_name"] if output else "raw"
    axes = [{"type": "batch"}, {"type": "channel", "channel_names": [str(channel)]}]
    for a, vs, h, d in zip("zyx", side["voxel_size_nm"], halo, div):
        ax = {"type": "space", "id": a, "unit": "nanometer", "scale": float(vs)}
        if output:
            ax["size"] = {"tensor_id": "raw", "axis_id": a}
            if h:
                ax["halo"] = h
        else:
            ax["size"] = {"min": 2 * h + d, "step": d}
        axes.append(ax)
    return axes


def description(side: dict, halo, div, tile: Box, hashes: dict, weights: str, n_params: int) -> dict:
    """The rdf.yaml content (bioimage.io model format 0.5): no URL anywhere, so validating it needs no network."""
    pre = side["preprocessing"]
    method = pre["record"]["method"]
    what = {"none": "raw voxels (normalisation inside the model)",
            "percentile": "raw voxels (the training's percentile stretch and the normalisation are inside the "
                          "model: bioimage.io's scale_range would re-measure percentiles per tile)",
            }.get(method, f"{method}-preprocessed voxels: apply it per whole z-slice first (see README)")
    fmt = side["format"]
    entry = {"source": weights, "sha256": hashes[weights],
             "comment": f"exported by fibtui from {side.get('train_job')} (normalise, U-Net, sigmoid in one graph)"}
    entry.update({"opset_version": OPSET} if fmt == "onnx" else {"pytorch_version": torch.__version__.split("+")[0]})
    target = str(side["target_name"])
    name = re.sub(r"[^A-Za-z0-9_+\- ()]", "-", f"fibtui {target} round {side.get('round')}")
    return {
        "format_version": BIOIMAGEIO_FORMAT, "type": "model", "name": name,
        "description": (f"3D U-Net probability of {target!r} in FIB-SEM at {side['voxel_size_nm']} nm voxels "
                        f"(z, y, x), trained interactively with fibtui ({side.get('train_job')}). Input: {what}."),
        "authors": [{"name": author()}], "cite": CITE, "license": LICENSE,
        "documentation": {"source": "README.md", "sha256": hashes["README.md"]},
        "covers": [{"source": "cover.png", "sha256": hashes["cover.png"]}],
        "attachments": [{"source": "fibtui.json", "sha256": hashes["fibtui.json"]}],
        "tags": ["3d", "electron-microscopy", "fib-sem", "semantic-segmentation", "unet", fmt, target],
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": [{"id": "raw", "description": f"intensities 0–255 as float32, {pre['input']} ({method})",
                    "axes": _axes(side, halo, div, output=False), "data": {"type": "float32", "range": [0.0, 255.0]},
                    "test_tensor": {"source": "test_input.npy", "sha256": hashes["test_input.npy"]},
                    "sample_tensor": {"source": "sample_input.tif", "sha256": hashes["sample_input.tif"]}}],
        "outputs": [{"id": "probability", "description": f"probability of {target!r}"[:128],
                     "axes": _axes(side, halo, div, output=True), "data": {"type": "float32", "range": [0.0, 1.0]},
                     "test_tensor": {"source": "test_output.npy", "sha256": hashes["test_output.npy"]},
                     "sample_tensor": {"source": "sample_output.tif", "sha256": hashes["sample_output.tif"]}}],
        "weights": {fmt: entry},
        "config": {
            "bioimageio": {"architecture_type": "3D U-Net", "modality": "electron microscopy (FIB-SEM)",
                           "target_structure": [target], "task": "semantic segmentation",
                           "model_parameter_count": n_params},
            "fibtui": {"round": side.get("round"), "train_job": side.get("train_job"), "session": side.get("session"),
                       "preprocessing": pre, "test_tile": {"offset": list(tile.offset), "shape": list(tile.shape)},
                       "exported_by": side.get("exported_by")},
        },
    }


def readme(side: dict, halo, tile: Box) -> str:
    """The package's documentation: what goes in, what comes out, how to tile, how it was checked."""
    pre = side["preprocessing"]
    steps = "\n".join(f"- {s}" for s in pre["in_model"])
    before = f"\n**Before the model:** {pre['before_model']}.\n" if pre["before_model"] else ""
    div = side["input"]["divisor"]
    least = [2 * h + d for h, d in zip(halo, div)]
    return f"""# fibtui model: {side['target_name']} (round {side.get('round')}, {side.get('train_job')})

A 3D U-Net trained with fibtui on FIB-SEM at voxel size {side['voxel_size_nm']} nm (z, y, x). It returns the
probability of class {side['target_name']!r} for every voxel.

## Input
One tensor `raw` (batch, channel, z, y, x), float32 intensities 0–255
({pre['input']} voxels); each spatial extent (z, y, x) a multiple of {div}, at least {least}.

Inside the model:
{steps}
{before}
Preprocessing record: `{json.dumps(pre['record'])}`.

## Tiling
Crop {list(halo)} voxels (z, y, x) from each side of every output tile and place tiles on a
{div} grid: the stitched result then equals one whole-volume pass, as in the session.

## Validation
The test tensors are tile {tile} of the session's volume (level 0): the input as this model takes it,
the output from the session's own prediction path (its preprocessing, normalisation, network, sigmoid),
before the session's uint8 rounding. Held-out scores of this model are in the session (`fibtui round eval`,
`fibtui report`). `sample_input.tif` and `sample_output.tif` are the same tile as uint8 stacks (the probability
× 255, as the session stores it) for viewers. fibtui's provenance (training job, code version) is in `fibtui.json`.

## Before uploading to bioimage.io
Add your GitHub user name to `authors` in rdf.yaml (the export does not guess it) and check the licence
({LICENSE} unless you change it).
"""


def validate(zpath: Path) -> dict:
    """bioimageio.spec's validation of the package (format and file checks: hashes, test tensors against the
    axes, the documentation), offline; {"validated": False} when bioimageio.spec is not installed. Its best status
    is "valid-format": "passed" needs bioimageio.core running the weights on the test tensors."""
    try:
        import bioimageio.spec as bio
    except ImportError:
        return {"validated": False, "note": "bioimageio.spec is not installed: the description was not validated"}
    with bio.ValidationContext(perform_io_checks=True, log_warnings=False, progressbar=False):
        descr = bio.load_description(zpath, perform_io_checks=True, progressbar=False)
    summary = descr.validation_summary
    who = f"bioimageio.spec {bio.__version__}"
    if summary.status == "failed":
        e = summary.errors[0]
        raise FibError(f"the bioimage.io package failed {who} validation: {'.'.join(map(str, e.loc))}: {e.msg}")
    warned = [f"{'.'.join(map(str, w.loc))}: {w.msg}" for w in summary.warnings]
    return {"validated": True, "validator": who, "status": summary.status, "warnings": warned,
            "note": f"validated by {who}: {summary.status}" + (f", {len(warned)} warning(s)" if warned else "")}


def write_package(out: Path, side: dict, checkpoint: Path, volume_path: str) -> dict:
    """The bioimage.io package of the model file `out` (exported with sidecar `side`), assembled aside and
    validated before it is renamed into place; returns {"path", "validated", "note", ...}."""
    net, ck = load_model(checkpoint, "cpu")
    net.eval()
    rec = record_of(ck)
    div, halo = net.cfg.divisor, block_halo(net)
    raw_shape = omezarr.open_multiscale(volume_path).levels[0].shape
    tile = reference_tile(raw_shape, halo, div)
    x, y = reference_tensors(net, rec, volume_path, tile)
    zpath = package_path(out)
    weights = "model" + FORMATS[side["format"]]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{zpath.name}.") as tmp:
        d = Path(tmp)
        shutil.copyfile(out, d / weights)
        np.save(d / "test_input.npy", x)
        np.save(d / "test_output.npy", y)
        # the same tile as uint8 z, y, x stacks (probability × 255, as the session stores it), for people and viewers
        tifffile.imwrite(d / "sample_input.tif", x[0, 0].astype(np.uint8))
        tifffile.imwrite(d / "sample_output.tif", np.round(y[0, 0] * 255).astype(np.uint8))
        write_cover(d / "cover.png", x, y)
        (d / "README.md").write_text(readme(side, halo, tile))
        (d / "fibtui.json").write_text(json.dumps(side, indent=2, sort_keys=True) + "\n")
        files = [weights, "test_input.npy", "test_output.npy", "sample_input.tif", "sample_output.tif", "cover.png",
                 "README.md", "fibtui.json"]
        hashes = {f: sha256(d / f) for f in files}
        rdf = description(side, halo, div, tile, hashes, weights, sum(p.numel() for p in net.parameters()))
        (d / "rdf.yaml").write_text(json.dumps(rdf, indent=2, ensure_ascii=False) + "\n")  # JSON is YAML 1.2
        part = d / "package.zip"
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in ["rdf.yaml", *files]:
                zf.write(d / f, f)
        check = validate(part)
        os.replace(part, zpath)
    return {"path": str(zpath), **check}
