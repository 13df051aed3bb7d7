"""`fibtui report`: the session as one static HTML page plus its PNGs, for the scientist.

Opens offline from any file browser: no server, no script or style from the network (one inline
script only counts the images that loaded and says so on the page if some did not). Written into
`<out>.partial` and renamed at the end, so a report directory is always complete.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from fibtui.report import plots
from fibtui.report.collect import collect
from fibtui.report.page import render
from sessions.errors import FibError
from sessions.workspace import Session

MAX_REGIONS = 3  # example slices per round


def _slices(session: Session, rnd: dict, data: dict, out: Path) -> list[dict]:
    """Middle xy slice of up to MAX_REGIONS held-out regions of the round: raw, labels, prediction overlay."""
    import zarr

    from sessions.volumes import catalog, omezarr

    spec = rnd["evaluate_spec"]
    if not rnd["prediction_dir"] or not spec or not data["volumes"]:
        return []
    try:
        pred = omezarr.open_multiscale(session.path(rnd["prediction_dir"])).levels[0]
        vol_name = (rnd["chain"]["raw"] or {}).get("volume") or data["volumes"][0]["name"]
        raw = catalog.open_volume(session, vol_name).levels[0]
    except Exception:  # noqa: BLE001 - a deleted prediction: the report says so instead of failing
        return []
    thr = int(round(float(spec.get("threshold", 0.5)) * 255))
    target = int(spec["target"])
    out_imgs = []
    regions = sorted(spec.get("regions", []), key=lambda r: r["id"])[:MAX_REGIONS]
    for reg in regions:
        o, sh = reg["offset"], reg["shape"]
        z = sh[0] // 2
        sl = (o[0] + z, slice(o[1], o[1] + sh[1]), slice(o[2], o[2] + sh[2]))
        r2 = np.asarray(raw[sl])
        p2 = np.asarray(pred[sl]) >= thr
        lab_path = session.path("holdout", f"{reg['id']}.zarr")
        try:
            lab = np.asarray(zarr.open_array(str(lab_path), mode="r")[z])
        except Exception:  # noqa: BLE001
            lab = None
        truth = lab == target if lab is not None else None
        known = lab > 0 if lab is not None else None
        name = f"round{rnd['n']}-region{reg['id']}.png"
        size = plots.overlay(r2, truth, known, p2, out / name,
                             f"round {rnd['n']}, held-out region {reg['id']}, z = {o[0] + z}")
        fp = int((p2 & ~truth & known).sum()) if truth is not None else None
        fn = int((~p2 & truth).sum()) if truth is not None else None
        out_imgs.append({"file": name, "size": size, "region": reg["id"], "z": o[0] + z, "fp": fp, "fn": fn})
    return out_imgs


def build_report(session: Session, out: Path | None = None) -> dict:
    """Write the report into `out` (default: <session>/exports/report); returns {path, index, images}."""
    out = Path(out) if out else session.path("exports", "report")
    if out.exists() and not (out / "index.html").exists() and any(out.iterdir()):
        raise FibError(f"--out {out}: exists and is not a fibtui report; give a new or empty directory")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        data = collect(session)
        figs = {}
        figs["timeline"] = ("timeline.png", plots.timeline(data["rounds"], data["timeline"], tmp / "timeline.png"))
        figs["scores"] = ("scores.png", plots.scores(data["scores"], tmp / "scores.png"))
        for r in data["rounds"]:
            figs[f"loss{r['n']}"] = (f"loss-round{r['n']}.png",
                                     plots.loss(r["loss"], tmp / f"loss-round{r['n']}.png", f"round {r['n']}: training"))
            r["slices"] = _slices(session, r, data, tmp)
        figs = {k: {"file": f, "size": s} for k, (f, s) in figs.items() if s is not None}
        (tmp / "index.html").write_text(render(data, figs), encoding="utf-8")
        images = sorted(p.name for p in tmp.glob("*.png"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return {"path": str(out), "index": str(out / "index.html"), "images": images,
            "rounds": len(data["rounds"]), "messages": len(data["messages"])}
