"""The deposit package of a session: a BagIt bag or an RO-Crate a data repository accepts.

One payload, two wrappers. The payload (its paths are the same in both):

    fibtui-package.json      index: raw volume reference, classes, rounds and their jobs, where each
                             session artefact is in the package (`files`: session path → package path)
    labels/crops/<id>.zarr   the sparse label crops (labels/crops.json: round, offset, shape, sha256)
    labels/holdout/<id>.zarr the frozen random held-out regions' labels (labels/holdout.json)
    rounds/<n>/round.json    the round; rounds/<n>/jobs/<job>/{spec,result}.json and metrics.csv (and a
                             measure job's pore and nucleus tables, Parquet and CSV)
    thread/messages.json     the curator–scientist thread and thread/interventions.json + notes.json
                             (left out with thread=False)
    models/<job>/model.pt    with `include={"models"}`: each completed training's weights and its spec
                             (PyTorch state dicts), and the TorchScript/ONNX files `fibtui model export`
                             wrote into exports/ for that training (with their JSON sidecars)
    predictions/<job>/…      with `include={"predictions"}`: each completed prediction's OME-Zarr
    CITATION.cff, LICENSE, README.md

The raw volume is referenced by checksum and location, not copied (it can be terabytes).
Every file is checksummed (BagIt's manifest-sha256.txt; the crate's checksums.sha256 and a
`sha256` on each File entity). Nothing in the payload depends on when the export ran: dates are
the session's own, JSON is written with sorted keys, so an unchanged session gives the same
checksums. Written into `<out>.partial` and renamed when complete.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from pathlib import Path

from sessions import interventions, jobs, journal
from sessions.errors import FibError
from sessions.workspace import Session

FORMATS = ("bagit", "ro-crate")
INCLUDES = ("predictions", "models")
INDEX = "fibtui-package.json"
CHECKSUMS = "checksums.sha256"
LICENSES = {  # SPDX id → (name, URL)
    "CC0-1.0": ("Creative Commons Zero v1.0 Universal", "https://creativecommons.org/publicdomain/zero/1.0/"),
    "CC-BY-4.0": ("Creative Commons Attribution 4.0 International", "https://creativecommons.org/licenses/by/4.0/"),
    "CC-BY-SA-4.0": ("Creative Commons Attribution Share Alike 4.0 International",
                     "https://creativecommons.org/licenses/by-sa/4.0/"),
    "ODbL-1.0": ("Open Data Commons Open Database License v1.0", "https://opendatacommons.org/licenses/odbl/1-0/"),
}


def parse_include(text: str | None) -> set[str]:
    items = {p.strip() for p in (text or "").split(",") if p.strip()}
    bad = sorted(items - set(INCLUDES))
    if bad:
        raise FibError(f"--include {text!r}: unknown {', '.join(bad)}; choose from {','.join(INCLUDES)}")
    return items


def _json(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def last_activity(session: Session) -> str:
    """The session's newest timestamp: the package's date, the same for every export of an unchanged session."""
    stamps = [session.meta("created") or "1970-01-01T00:00:00+00:00"]
    for sql in ("select max(created) from rounds", "select max(coalesce(ended, submitted)) from jobs",
                "select max(time) from messages", "select max(time) from interventions", "select max(time) from notes",
                "select max(created) from crops", "select max(created) from holdout"):
        v = session.db.execute(sql).fetchone()[0]
        if v:
            stamps.append(v)
    return max(stamps)


def _authors(session: Session) -> list[str]:
    names = set()
    for sql in ("select distinct author from messages", "select distinct author from interventions",
                "select distinct author from notes"):
        names.update(r[0] for r in session.db.execute(sql) if r[0])
    return sorted(names)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)


def _metrics_csv(session: Session, job_id: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "name", "value", "time"])
    for r in session.db.execute("select step, name, value, time from metrics where job = ? order by step, name, id",
                                [job_id]):
        w.writerow(r)
    return buf.getvalue()


def _exported_models(session: Session, job_id: str, dest: Path) -> list[str]:
    """TorchScript/ONNX files `fibtui model export` wrote into exports/ for this training (with their sidecars)."""
    out = []
    for side in sorted(session.path("exports").glob("*.json")):
        try:
            about = json.loads(side.read_text())
        except (OSError, ValueError):
            continue
        model = side.with_name(side.name[:-len(".json")])
        if not isinstance(about, dict) or about.get("train_job") != job_id or not model.is_file():
            continue
        for f in (model, side):
            _copy(f, dest / f.name)
        out.append(f"models/{job_id}/{model.name}")
    return out


def write_payload(session: Session, root: Path, *, include: set[str], thread: bool, license_id: str,
                  authors: list[str] | None) -> dict:
    """Every payload file under `root`; returns the package index (also written as fibtui-package.json)."""
    files: dict[str, str] = {}
    crops = list(session.db["crops"].rows_where(order_by="id"))
    for c in crops:
        dst = f"labels/crops/{c['id']}.zarr"
        _copy(session.path(c["path"]), root / dst)
        files[c["path"]] = dst
    crop_meta = [{"id": c["id"], "round": c["round"], "volume": c["volume"], "offset": c["offset"],
                  "shape": c["shape"], "classes": json.loads(c["classes"]) if c["classes"] else None,
                  "sha256": c["sha256"], "labelled_voxels": c["labelled_voxels"], "path": files[c["path"]],
                  "created": c["created"]} for c in crops]
    (root / "labels").mkdir(exist_ok=True)
    (root / "labels" / "crops.json").write_text(_json(crop_meta))
    hold = []
    for h in session.db["holdout"].rows_where(order_by="id"):
        entry = {k: h[k] for k in ("id", "volume", "offset", "shape", "seed", "created")}
        entry["classes"] = json.loads(h["classes"]) if h["classes"] else None
        if h["labels_path"]:
            dst = f"labels/holdout/{h['id']}.zarr"
            _copy(session.path(h["labels_path"]), root / dst)
            files[h["labels_path"]] = dst
            entry["path"] = dst
        hold.append(entry)
    (root / "labels" / "holdout.json").write_text(_json(hold))

    rounds = []
    for r in session.db["rounds"].rows_where(order_by="n"):
        rdir = root / "rounds" / str(r["n"])
        rdir.mkdir(parents=True)
        (rdir / "round.json").write_text(_json(r))
        job_rows = list(session.db["jobs"].rows_where("round = ?", [r["n"]], order_by="rowid"))
        rjobs = []
        for j in job_rows:
            jdir = rdir / "jobs" / j["id"]
            jdir.mkdir(parents=True)
            spec = jobs.spec(session, j)
            if spec is not None:
                (jdir / "spec.json").write_text(_json(spec))
            res = jobs.result(session, j)
            if res is not None:
                (jdir / "result.json").write_text(_json(res))
            (jdir / "metrics.csv").write_text(_metrics_csv(session, j["id"]))
            if j["kind"] == "measure" and j["state"] == "COMPLETED":  # the answer's tables: pores, nuclei
                for t in sorted(jobs.job_dir(session, j).glob("*.parquet")) + sorted(jobs.job_dir(session, j).glob("*.csv")):
                    _copy(t, jdir / t.name)
            files[j["dir"]] = f"rounds/{r['n']}/jobs/{j['id']}"
            row = {k: j[k] for k in ("id", "kind", "executor", "state", "reason", "submitted", "started", "ended",
                                     "elapsed_s", "gpus", "gpu_hours", "resumes", "init_from")}
            if j["state"] == "COMPLETED" and "models" in include and j["kind"] == "train":
                src = session.path(j["dir"], "model.pt")
                if src.is_file():
                    dst = f"models/{j['id']}/model.pt"
                    _copy(src, root / dst)
                    (root / "models" / j["id"] / "spec.json").write_text(_json(spec))
                    files[f"{j['dir']}/model.pt"] = dst
                    row["model"] = dst
                    row["exported_models"] = _exported_models(session, j["id"], root / "models" / j["id"])
            if j["state"] == "COMPLETED" and "predictions" in include and j["kind"] == "predict":
                out = (res or {}).get("output") or "prediction.ome.zarr"
                src = session.path(j["dir"], out)
                if src.is_dir():
                    dst = f"predictions/{j['id']}/{out}"
                    _copy(src, root / dst)
                    files[f"{j['dir']}/{out}"] = dst
                    row["prediction"] = dst
            rjobs.append(row)
        rounds.append({**r, "jobs": rjobs})

    if thread:
        (root / "thread").mkdir()
        (root / "thread" / "messages.json").write_text(_json(journal.messages(session)))
        (root / "thread" / "interventions.json").write_text(_json(interventions.entries(session)))
        (root / "thread" / "notes.json").write_text(_json(journal.notes(session)))

    raw = [{"name": v["name"], "checksum": v["source_checksum"], "shape": v["shape"], "dtype": v["dtype"],
            "voxel_size_nm": v["voxel_size"], "levels": v["levels"], "source": v["source"],
            "source_format": v["source_format"], "source_dtype": v["source_dtype"],
            "conversion": json.loads(v["conversion"]) if v["conversion"] else None,
            "session_path": v["path"], "location": str(session.path(v["path"])), "copied": False}
           for v in session.db["volumes"].rows_where(order_by="name")]
    date = last_activity(session)
    authors = authors or _authors(session) or ["fibtui curator"]
    from sessions.provenance import code_version

    index = {"format": "fibtui-package/1", "session": session.root.name, "session_root": str(session.root),
             "date": date, "license": license_id, "classes": json.loads(session.meta("classes") or "[]"),
             "raw": raw, "rounds": rounds, "files": dict(sorted(files.items())), "included": sorted(include),
             "thread": thread, "authors": authors, "fibtui": code_version().get("fibtui")}
    (root / INDEX).write_text(_json(index))
    name, url = LICENSES[license_id]
    (root / "LICENSE").write_text(
        f"{name} ({license_id})\n\nThe labels, metrics, models and records in this package are released under "
        f"{name}.\nFull legal text: {url}legalcode\n\nThe raw volume is not part of this package; it is referenced "
        "in fibtui-package.json by checksum and location, and its own terms apply.\n")
    title = f"fibtui session {session.root.name}: sparse labels, training rounds and held-out evaluations"
    cff = ["cff-version: 1.2.0", "message: \"If you use this dataset, please cite it as below.\"", "type: dataset",
           f"title: {json.dumps(title)}", "authors:"]
    cff += [f"  - name: {json.dumps(a)}" for a in authors]
    cff += [f"date-released: {date[:10]}", f"license: {license_id}",
            "keywords:", "  - FIB-SEM", "  - electron microscopy", "  - segmentation", "  - sparse labels"]
    (root / "CITATION.cff").write_text("\n".join(cff) + "\n")
    (root / "README.md").write_text(
        f"# {title}\n\nExported by fibtui {index['fibtui']} from session `{session.root.name}` (last activity {date}).\n\n"
        "- `fibtui-package.json`: the index (raw volume reference by checksum and location, rounds, jobs, "
        "which session file is where in this package)\n- `labels/`: label crops and held-out regions (zarr v3, "
        "uint8, 0 = unlabelled, class i = label i)\n- `rounds/<n>/jobs/<job>/`: each job's recorded spec, result "
        "and metrics\n" + ("- `thread/`: the curator–scientist messages, the intervention log and notes\n" if thread
                           else "") +
        ("- `models/`: trained weights (PyTorch state dicts) with their training specs, and TorchScript/ONNX "
         "exports with their sidecars where `fibtui model export` made them\n" if "models" in include
         else "") + ("- `predictions/`: probability OME-Zarr volumes (uint8, p × 255)\n" if "predictions" in include
                     else "") +
        "\nReproduce a round: `fibtui reproduce --package <this directory> --round N --raw <raw volume>`.\n")
    return index


def _all_files(root: Path, skip: set[str] = frozenset()) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and str(p.relative_to(root)) not in skip)


def _write_checksums(root: Path, skip: set[str]) -> dict[str, str]:
    sums = {rel: sha256(root / rel) for rel in _all_files(root, skip)}
    (root / CHECKSUMS).write_text("".join(f"{h}  {rel}\n" for rel, h in sums.items()))
    return sums


def _bagit(tmp: Path, index: dict) -> None:
    import bagit

    bagit.make_bag(str(tmp), bag_info={
        "Bagging-Date": index["date"][:10], "Bag-Software-Agent": f"fibtui {index['fibtui']} (bagit.py)",
        "External-Description": f"fibtui session {index['session']}: labels, rounds, evaluations",
        "External-Identifier": f"fibtui-session:{index['session']}",
        "Contact-Name": ", ".join(index["authors"]), "Source-Organization": "fibtui",
        "License": index["license"]}, checksums=["sha256"])


def _rocrate(tmp: Path, index: dict) -> None:
    from rocrate.rocrate import ROCrate

    sums = _write_checksums(tmp, set())
    crate = ROCrate()
    name, url = LICENSES[index["license"]]
    lic = crate.add_jsonld({"@id": url, "@type": "CreativeWork", "name": name, "identifier": index["license"]})
    crate.name = f"fibtui session {index['session']}"
    crate.description = ("Sparse label crops, frozen random held-out regions, the training/prediction/evaluation "
                         "specs and metrics of every round, and the curator–scientist record of a fibtui session.")
    crate.license = lic
    crate.datePublished = index["date"]
    people = [crate.add_jsonld({"@id": f"#author-{i}", "@type": "Person", "name": a})
              for i, a in enumerate(index["authors"])]
    crate.creator = people
    for v in index["raw"]:
        crate.add_jsonld({"@id": f"#raw-{v['name']}", "@type": "Dataset", "name": f"raw volume {v['name']}",
                          "description": "Not copied: referenced by checksum and location.",
                          "identifier": v["checksum"], "contentLocation": v["location"],
                          "encodingFormat": v["source_format"]})
    dirs = sorted({str(Path(rel).parent) for rel in sums} - {"."})
    zarrs = sorted(d for d in dirs if d.endswith(".zarr") and not any(d.startswith(z + "/") for z in dirs
                                                                      if z != d and z.endswith(".zarr")))
    for z in zarrs:
        crate.add_dataset(None, dest_path=z, properties={"encodingFormat": "application/x-zarr",
                                                         "name": Path(z).name})
    formats = {".json": "application/json", ".csv": "text/csv", ".cff": "application/x-yaml", ".md": "text/markdown",
               ".pt": "application/octet-stream", ".sha256": "text/plain"}
    for rel, h in sums.items():
        if any(rel.startswith(z + "/") for z in zarrs):
            continue
        crate.add_file(None, dest_path=rel, properties={
            "sha256": h, "contentSize": (tmp / rel).stat().st_size,
            "encodingFormat": formats.get(Path(rel).suffix, "text/plain" if rel == "LICENSE" else
                                          "application/octet-stream")})
    crate.add_file(None, dest_path=CHECKSUMS, properties={"encodingFormat": "text/plain",
                                                          "description": "sha256 of every other file"})
    crate.metadata.write(tmp)


def export(session: Session, fmt: str, out: Path | None = None, *, include: set[str] = frozenset(),
           thread: bool = True, license_id: str = "CC0-1.0", authors: list[str] | None = None) -> dict:
    """Write the package; returns {path, format, files, bytes, checksums (payload path → sha256)}."""
    if fmt not in FORMATS:
        raise FibError(f"--format {fmt!r}: choose {' or '.join(FORMATS)}")
    if license_id not in LICENSES:
        raise FibError(f"--license {license_id!r}: choose one of {', '.join(LICENSES)} (SPDX ids)")
    bad = sorted(set(include) - set(INCLUDES))
    if bad:
        raise FibError(f"--include: unknown {', '.join(bad)}; choose from {','.join(INCLUDES)}")
    out = Path(out) if out else session.path("exports", fmt)
    if out.exists() and any(out.iterdir()):
        raise FibError(f"--out {out}: already exists and is not empty; give a new directory (or remove it)")
    try:
        out.resolve().relative_to(session.root)
        allowed = out.resolve().parent == session.path("exports")  # inside: only as exports/NAME
    except ValueError:
        allowed = True  # outside the session
    if not allowed:
        raise FibError(f"--out {out}: inside the session; use <session>/exports/NAME or a directory outside it")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        index = write_payload(session, tmp, include=set(include), thread=thread, license_id=license_id,
                              authors=authors)
        if fmt == "bagit":
            _bagit(tmp, index)
            payload = tmp / "data"
        else:
            _rocrate(tmp, index)
            payload = tmp
        sums = {}
        skip = {"ro-crate-metadata.json", CHECKSUMS} if fmt == "ro-crate" else set()
        for rel in _all_files(payload, skip):
            sums[rel] = sha256(payload / rel)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    final = out / "data" if fmt == "bagit" else out
    return {"path": str(out), "format": fmt, "files": len(sums),
            "bytes": sum((final / r).stat().st_size for r in sums), "checksums": sums}
