"""`fibtui export`: a BagIt bag (validated by bagit) and an RO-Crate (made and read back by rocrate)."""

from __future__ import annotations

import hashlib
import json

import bagit
import pytest
from rocrate.rocrate import ROCrate

from conftest import run_cli
from recorded import make_recorded


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return make_recorded(tmp_path_factory.mktemp("export"))


def export(session, out, *extra):
    return json.loads(run_cli("export", "--session", session, "--out", out, "--json", *extra, check=True).stdout)


def sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_bagit_bag_validates_holds_the_record_and_is_reproducible(recorded, tmp_path):
    res = export(recorded, tmp_path / "bag", "--format", "bagit", "--include", "models")
    bag = bagit.Bag(str(tmp_path / "bag"))
    bag.validate()  # every payload file against manifest-sha256.txt, Payload-Oxum, tag files
    data = tmp_path / "bag" / "data"
    payload = {str(p.relative_to(tmp_path / "bag")) for p in data.rglob("*") if p.is_file()}
    assert set(bag.entries) - {"bag-info.txt", "bagit.txt", "manifest-sha256.txt"} >= payload
    for rel in ("CITATION.cff", "LICENSE", "README.md", "fibtui-package.json", "labels/crops.json",
                "labels/holdout.json", "labels/crops/1.zarr/zarr.json", "labels/holdout/1.zarr/zarr.json",
                "rounds/1/round.json", "rounds/1/jobs/r1-train-1/spec.json", "rounds/1/jobs/r1-train-1/metrics.csv",
                "rounds/1/jobs/r1-evaluate-1/result.json", "thread/messages.json", "thread/interventions.json",
                "models/r1-train-1/model.pt", "models/r1-train-1/spec.json"):
        assert (data / rel).is_file(), rel
    assert "CC0-1.0" in (data / "LICENSE").read_text() and "license: CC0-1.0" in (data / "CITATION.cff").read_text()
    assert bag.info["License"] == "CC0-1.0"
    index = json.loads((data / "fibtui-package.json").read_text())
    raw = index["raw"][0]
    assert raw["checksum"].startswith("blake3-voxels:") and raw["copied"] is False and raw["location"].endswith(".ome.zarr")
    assert not any(p.name.endswith(".ome.zarr") for p in data.rglob("*"))  # neither raw nor predictions copied
    assert index["files"]["rounds/1/crops/1.zarr"] == "labels/crops/1.zarr"
    msgs = json.loads((data / "thread" / "messages.json").read_text())
    assert msgs[0]["text"].startswith("How many blobs")
    assert res["checksums"]["CITATION.cff"] == sha(data / "CITATION.cff")

    again = export(recorded, tmp_path / "bag2", "--format", "bagit", "--include", "models")
    assert again["checksums"] == res["checksums"]
    for tag in ("manifest-sha256.txt", "tagmanifest-sha256.txt", "bag-info.txt"):
        assert (tmp_path / "bag" / tag).read_bytes() == (tmp_path / "bag2" / tag).read_bytes(), tag


def test_ro_crate_is_read_back_by_rocrate_and_checksums_hold(recorded, tmp_path):
    out = tmp_path / "crate"
    res = export(recorded, out, "--format", "ro-crate", "--include", "predictions", "--license", "CC-BY-4.0")
    crate = ROCrate(str(out))
    assert crate.license.id == "https://creativecommons.org/licenses/by/4.0/"
    assert crate.datePublished and crate.name.startswith("fibtui session")
    entities = {e.id: e for e in crate.data_entities}
    files = [e for e in entities.values() if "File" in e.type]
    for rel in ("CITATION.cff", "LICENSE", "fibtui-package.json", "checksums.sha256",
                "rounds/1/jobs/r1-train-1/spec.json"):
        assert rel in entities, rel
    assert "labels/crops/1.zarr/" in entities and "predictions/r1-predict-1/prediction.ome.zarr/" in entities
    for e in files:
        assert (out / e.id).is_file(), e.id
        if e.get("sha256"):
            assert sha(out / e.id) == e["sha256"], e.id
    listed = {}
    for line in (out / "checksums.sha256").read_text().splitlines():
        h, rel = line.split("  ", 1)
        listed[rel] = h
    every = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()} - {"ro-crate-metadata.json",
                                                                             "checksums.sha256"}
    assert set(listed) == every
    assert all(sha(out / rel) == h for rel, h in listed.items())
    assert res["checksums"] == listed
    raw = crate.get("#raw-v")
    assert raw["identifier"].startswith("blake3-voxels:")
    again = tmp_path / "crate2"
    export(recorded, again, "--format", "ro-crate", "--include", "predictions", "--license", "CC-BY-4.0")
    assert (again / "ro-crate-metadata.json").read_bytes() == (out / "ro-crate-metadata.json").read_bytes()
    assert (again / "checksums.sha256").read_bytes() == (out / "checksums.sha256").read_bytes()


def test_no_thread_leaves_the_conversation_out(recorded, tmp_path):
    export(recorded, tmp_path / "b", "--format", "bagit", "--no-thread")
    data = tmp_path / "b" / "data"
    assert not (data / "thread").exists()
    assert "How many blobs" not in "".join(p.read_text() for p in data.rglob("*.json"))
    bagit.Bag(str(tmp_path / "b")).validate()


@pytest.mark.parametrize("args, needle", [
    (["--format", "bagit", "--include", "weights"], "--include 'weights': unknown weights"),
    (["--format", "bagit", "--license", "GPL"], "--license 'GPL'"),
])
def test_bad_input_one_line_nothing_written(recorded, tmp_path, args, needle):
    proc = run_cli("export", "--session", recorded, "--out", tmp_path / "x", *args)
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_existing_out_is_refused(recorded, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("mine")
    proc = run_cli("export", "--session", recorded, "--out", tmp_path / "x", "--format", "ro-crate")
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["keep"]


def test_models_include_torchscript_onnx_files_fibtui_model_export_made(recorded, tmp_path):
    import shutil

    s = tmp_path / "s"
    shutil.copytree(recorded, s)
    (s / "exports" / "r1-blob.onnx").write_bytes(b"onnx bytes")
    (s / "exports" / "r1-blob.onnx.json").write_text(json.dumps({"format": "onnx", "train_job": "r1-train-1"}))
    export(s, tmp_path / "bag", "--format", "bagit", "--include", "models")
    data = tmp_path / "bag" / "data"
    assert (data / "models" / "r1-train-1" / "r1-blob.onnx").read_bytes() == b"onnx bytes"
    assert (data / "models" / "r1-train-1" / "r1-blob.onnx.json").is_file()
    index = json.loads((data / "fibtui-package.json").read_text())
    train = next(j for j in index["rounds"][0]["jobs"] if j["id"] == "r1-train-1")
    assert train["exported_models"] == ["models/r1-train-1/r1-blob.onnx"]
    bagit.Bag(str(tmp_path / "bag")).validate()
