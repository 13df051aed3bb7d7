"""`fibtui reproduce`: run a round's training, prediction and evaluation again from their recorded specs.

The specs are the ones the round's jobs ran with (from the session, or from an exported package's
`rounds/<n>/jobs/*/spec.json`). Their paths are moved to where the inputs are now: the session's
crops, held-out labels, volume and (for a fine-tuned round) the model it started from, or the
package's copies (`files` in fibtui-package.json) and the raw volume given with `raw`.

The jobs run in a scratch session (`<scratch>/session`: its own SQLite and job directories; the
original is only read), through `remote.dispatch.Dispatcher` like any round, on any executor. Then
the new scores are compared with the recorded ones: on the CPU with the recorded seed and thread
count they must be identical (as must the trained weights); elsewhere (a GPU, bf16 autocast, other
thread counts) within `TOLERANCE` per score.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

from sessions.errors import FibError

TOLERANCE = 0.02  # absolute, per score (IoU, F1, precision, recall) when not bit-exact (GPU, other threads)
SCORES = ("iou", "f1", "precision", "recall")
COUNTS = ("labelled_voxels", "objects_pred_heldout", "objects_true_heldout", "volume_count")
_PARTS = re.compile(r"/(volumes|rounds|holdout|jobs)/")


class Recorded:
    """A round as recorded: its completed train/predict/evaluate specs and results, and where inputs are."""

    def __init__(self, round_n: int, specs: dict, results: dict, resolve: Callable[[str], Path], source: str,
                 rounds: list[dict], model: Path | None):
        self.round_n, self.specs, self.results, self.resolve, self.source = round_n, specs, results, resolve, source
        self.rounds, self.model = rounds, model  # model: the recorded trained weights, when at hand


def _tails(path: str) -> list[str]:
    """Session-relative candidates of a recorded absolute path (`…/rounds/1/crops/2.zarr` → `rounds/1/crops/2.zarr`),
    from the first `/rounds/`-like part on (a session inside a directory called `jobs` still resolves)."""
    return [path[m.start() + 1:] for m in _PARTS.finditer(path)]


def from_session(session, round_n: int) -> Recorded:
    from sessions import jobs

    if not session.db["rounds"].count_where("n = ?", [round_n]):
        raise FibError(f"--round {round_n}: no such round in {session.root}; see `fibtui status`")
    specs, results = {}, {}
    for kind in ("train", "predict", "evaluate"):
        row = next(session.db["jobs"].rows_where("round = ? and kind = ? and state = 'COMPLETED'", [round_n, kind],
                                                 order_by="rowid desc", limit=1), None)
        if row is None:
            raise FibError(f"--round {round_n}: has no completed {kind} job to reproduce; finish the round first")
        specs[kind], results[kind] = jobs.spec(session, row), jobs.result(session, row)
        if specs[kind] is None or results[kind] is None:
            raise FibError(f"--round {round_n}: the spec or result of {row['id']} is missing from {row['dir']}")

    def resolve(path: str) -> Path:
        for rel in _tails(path):
            if session.path(rel).exists():
                return session.path(rel)
        raise FibError(f"{path}: recorded input not found in {session.root}; restore it, or reproduce from an "
                       "exported package with --package")

    rounds = list(session.db["rounds"].rows_where("n <= ?", [round_n], order_by="n"))
    train = next(session.db["jobs"].rows_where("round = ? and kind = 'train' and state = 'COMPLETED'", [round_n],
                                               order_by="rowid desc", limit=1))
    model = session.path(train["dir"], results["train"].get("checkpoint", "model.pt"))
    return Recorded(round_n, specs, results, resolve, str(session.root), rounds, model)


def from_package(pkg: Path, round_n: int, raw: Path | None) -> Recorded:
    pkg = Path(pkg)
    payload = pkg / "data" if (pkg / "bagit.txt").exists() else pkg
    try:
        index = json.loads((payload / "fibtui-package.json").read_text())
    except (OSError, ValueError):
        raise FibError(f"--package {pkg}: not a fibtui export (no readable fibtui-package.json); "
                       "make one with `fibtui export`") from None
    rnd = next((r for r in index["rounds"] if r["n"] == round_n), None)
    if rnd is None:
        raise FibError(f"--round {round_n}: not in the package {pkg}; it holds rounds "
                       f"{', '.join(str(r['n']) for r in index['rounds']) or 'none'}")
    specs, results, model = {}, {}, None
    for kind in ("train", "predict", "evaluate"):
        job = next((j for j in reversed(rnd["jobs"]) if j["kind"] == kind and j["state"] == "COMPLETED"), None)
        if job is not None and job.get("model"):
            model = payload / job["model"]
        if job is None:
            raise FibError(f"--round {round_n}: the package has no completed {kind} job of that round")
        d = payload / "rounds" / str(round_n) / "jobs" / job["id"]
        specs[kind] = json.loads((d / "spec.json").read_text())
        results[kind] = json.loads((d / "result.json").read_text())
    vols = {v["session_path"]: v for v in index["raw"]}
    files = index["files"]

    def resolve(path: str) -> Path:
        for rel in _tails(path):
            if rel.startswith("volumes/"):
                v = vols.get(rel)
                p = Path(raw) if raw else Path(v["location"]) if v else None
                if p is None or not p.exists():
                    raise FibError(f"the raw volume {rel} is not in the package (by design); pass --raw PATH "
                                   f"(checksum {v['checksum'] if v else '?'})")
                return p
            for src, dst in sorted(files.items(), key=lambda kv: -len(kv[0])):
                if rel == src or rel.startswith(src + "/"):
                    p = payload / (dst + rel[len(src):])
                    if p.exists():
                        return p
        raise FibError(f"{path}: not in the package {pkg} (export it with --include models for a fine-tuned round)")

    rounds = [{k: r[k] for k in ("n", "created", "target", "parent", "status")} for r in index["rounds"]
              if r["n"] <= round_n]
    return Recorded(round_n, specs, results, resolve, str(pkg), rounds, model)


def _relocated(spec: dict, rec: Recorded, **override) -> dict:
    s = json.loads(json.dumps(spec))
    s.pop("job_id", None)
    s.pop("kind", None)
    s.pop("resume_from", None)  # a resumed attempt reproduces as one uninterrupted run (bit-identical by design)
    if "volume" in s:
        s["volume"]["path"] = str(rec.resolve(s["volume"]["path"]))
    for c in s.get("crops", []):
        c["path"] = str(rec.resolve(c["path"]))
    for r in s.get("regions", []):
        r["labels_path"] = str(rec.resolve(r["labels_path"]))
    if s.get("init_checkpoint"):
        s["init_checkpoint"] = str(rec.resolve(s["init_checkpoint"]))
    s.update({k: v for k, v in override.items() if v is not None})
    return s


def _same_weights(a: Path, b: Path) -> bool:
    import torch

    x, y = torch.load(a, map_location="cpu", weights_only=False), torch.load(b, map_location="cpu", weights_only=False)
    xm, ym = x.get("model", x), y.get("model", y)
    return xm.keys() == ym.keys() and all(torch.equal(xm[k], ym[k]) for k in xm)


def reproduce(rec: Recorded, scratch: Path, *, executor: str = "local", device: str | None = None,
              on_job: Callable[[dict], None] | None = None) -> dict:
    """Run the round again in `scratch` (a new scratch session) and compare; returns the comparison."""
    from remote.dispatch import Dispatcher
    from sessions import jobs
    from sessions.workspace import init_session

    scratch = Path(scratch)
    if scratch.exists() and any(scratch.iterdir()):
        raise FibError(f"--scratch {scratch}: exists and is not empty; give a new directory")
    s = init_session(scratch / "session")
    try:
        s.db["rounds"].insert_all(rec.rounds, pk="n")
        d = Dispatcher(s)
        ran = {}
        try:
            train = d.submit(rec.round_n, "train", _relocated(rec.specs["train"], rec, device=device), executor)
            ran["train"] = d.wait(train["id"], on_update=on_job)
            if ran["train"]["state"] != "COMPLETED":
                raise FibError(f"reproduction of round {rec.round_n}: training {ran['train']['state']} "
                               f"({ran['train']['reason'] or 'see its log'}); see {jobs.job_dir(s, ran['train'])}")
            model = jobs.job_dir(s, ran["train"]) / (jobs.result(s, ran["train"]) or {}).get("checkpoint", "model.pt")
            pspec = _relocated(rec.specs["predict"], rec, device=device)
            pspec["checkpoint"] = str(model)
            pred = d.submit(rec.round_n, "predict", pspec, executor)
            ran["predict"] = d.wait(pred["id"], on_update=on_job)
            if ran["predict"]["state"] != "COMPLETED":
                raise FibError(f"reproduction of round {rec.round_n}: prediction {ran['predict']['state']}")
            out = jobs.job_dir(s, ran["predict"]) / (jobs.result(s, ran["predict"]) or {}).get(
                "output", "prediction.ome.zarr")
            espec = _relocated(rec.specs["evaluate"], rec)
            espec["prediction"] = str(out)
            ev = d.submit(rec.round_n, "evaluate", espec, executor)
            ran["evaluate"] = d.wait(ev["id"], on_update=on_job)
            if ran["evaluate"]["state"] != "COMPLETED":
                raise FibError(f"reproduction of round {rec.round_n}: evaluation {ran['evaluate']['state']}")
            new = (jobs.result(s, ran["evaluate"]) or {}).get("metrics", {})
        finally:
            d.close()
        gpus = max((j.get("gpus") or 0) for j in ran.values())
        cpu_exact = gpus == 0 and str(rec.specs["train"].get("device", "auto")) in ("auto", "cpu") and \
            (device in (None, "cpu", "auto"))
        old = rec.results["evaluate"].get("metrics", {})
        rows = []
        for k in SCORES + COUNTS:
            if k in old or k in new:
                a, b = old.get(k), new.get(k)
                diff = None if a is None or b is None else abs(float(a) - float(b))
                tol = 0.0 if cpu_exact else (TOLERANCE if k in SCORES else None)
                ok = a == b if tol == 0.0 else (diff is not None and (tol is None or diff <= tol))
                rows.append({"name": k, "recorded": a, "reproduced": b, "diff": diff, "tolerance": tol, "ok": ok})
        weights = None
        if rec.model is not None and rec.model.is_file():
            weights = _same_weights(rec.model, model)
        scored = [r for r in rows if r["name"] in SCORES]
        ok = all(r["ok"] for r in scored) and (weights is not False or not cpu_exact)
        return {"round": rec.round_n, "from": rec.source, "scratch": str(scratch), "executor": executor,
                "mode": "exact (CPU, recorded seed)" if cpu_exact else f"within ±{TOLERANCE}",
                "exact": cpu_exact, "weights_identical": weights, "scores": rows, "ok": ok,
                "jobs": {k: {"id": v["id"], "state": v["state"], "elapsed_s": v["elapsed_s"]} for k, v in ran.items()}}
    finally:
        s.close()


def run(*, session_dir: Path | None, package: Path | None, round_n: int, scratch: Path | None, raw: Path | None,
        executor: str, device: str | None, on_job=None) -> dict:
    from sessions.workspace import open_session

    if (session_dir is None) == (package is None):
        raise FibError("give --session S or --package DIR (an export of `fibtui export`), one of them")
    if package is not None:
        rec = from_package(package, round_n, raw)
        base = Path(package)
        scratch = Path(scratch) if scratch else base.with_name(base.name + f"-reproduce-r{round_n}")
        return reproduce(rec, scratch, executor=executor, device=device, on_job=on_job)
    s = open_session(session_dir)
    try:
        rec = from_session(s, round_n)
        if scratch is None:
            scratch = s.path("exports", f"reproduce-r{round_n}")
            shutil.rmtree(scratch, ignore_errors=True)  # fibtui's own scratch: a new reproduction replaces it
    finally:
        s.close()
    return reproduce(rec, Path(scratch), executor=executor, device=device, on_job=on_job)
