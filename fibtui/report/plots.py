"""The report's figures as PNG files (matplotlib, Agg backend: no display needed).

Every function writes one PNG and returns its (width, height) in pixels, or None when there is
nothing to draw. Images are deterministic for the same data (no timestamps in the PNG metadata).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np

DPI = 100
PNG_META = {"Software": None}  # no matplotlib version stamp: same data, same bytes
KIND_COLOUR = {"train": "#1f77b4", "predict": "#9467bd", "evaluate": "#2ca02c", "measure": "#8c564b"}
# overlay colours (RGB 0..1): true positive, false positive, false negative
TP, FP, FN = (0.15, 0.8, 0.25), (0.95, 0.15, 0.1), (0.15, 0.45, 1.0)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> tuple[int, int]:
    fig.savefig(path, dpi=DPI, metadata=PNG_META)
    w, h = fig.get_size_inches() * DPI
    _plt().close(fig)
    return int(round(w)), int(round(h))


def _t(stamp: str | None):
    return datetime.fromisoformat(stamp) if stamp else None


def timeline(rounds: list[dict], events: list[dict], path: Path) -> tuple[int, int] | None:
    """Jobs as bars (one lane per kind), rounds as shaded spans, messages and interventions as markers,
    held-out scores as labelled points: everything on one time axis."""
    times = [_t(e["time"]) for e in events if e["time"]]
    if not times:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.4))
    lanes = ["interventions", "messages", "evaluate", "predict", "train"]
    if any(j["kind"] == "measure" for r in rounds for j in r["jobs"]):
        lanes.insert(2, "measure")
    y = {name: i for i, name in enumerate(lanes)}
    end = max(times)
    for i, r in enumerate(rounds):
        t0 = _t(r["created"])
        t1 = _t(rounds[i + 1]["created"]) if i + 1 < len(rounds) else end
        ax.axvspan(t0, t1, color="#f0f0f0" if i % 2 == 0 else "#e0e8f0", zorder=0)
        ax.text(t0, len(lanes) - 0.35, f" round {r['n']}", fontsize=8, va="top")
        for j in r["jobs"]:
            s, e = _t(j["started"] or j["submitted"]), _t(j["ended"]) or end
            if s and j["kind"] in y:
                ax.barh(y[j["kind"]], max((e - s).total_seconds(), 1) / 86400, left=s, height=0.5,
                        color=KIND_COLOUR[j["kind"]], alpha=0.85 if j["state"] == "COMPLETED" else 0.35)
    for e in events:
        if e["type"] == "message":
            ax.plot(_t(e["time"]), y["messages"], marker="o", color="#d62728" if e["kind"] in ("question", "deadlock")
                    else "#ff7f0e", ms=6)
        elif e["type"] in ("intervention", "note"):
            ax.plot(_t(e["time"]), y["interventions"], marker="D", color="#555555", ms=5)
        elif e["type"] == "evaluation" and e.get("iou") is not None:
            ax.annotate(f"IoU {e['iou']:.2f}", (_t(e["time"]), y["evaluate"]), textcoords="offset points",
                        xytext=(0, 8), fontsize=8, ha="center", color="#2ca02c")
    ax.set_yticks(range(len(lanes)), lanes)
    ax.set_ylim(-0.6, len(lanes) - 0.2)
    ax.xaxis_date()
    fig.autofmt_xdate()
    ax.set_title("Session timeline (UTC)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# the held-out scores per round: key, legend label, line style, colour
SCORE_SERIES = (("iou", "IoU", "o-", "#1f77b4"), ("f1", "F1", "s--", "#2ca02c"),
                ("object_f1", "object F1", "^-", "#ff7f0e"), ("precision", "precision", ":", "#9467bd"),
                ("recall", "recall", "-.", "#8c564b"))


def scores(scores: list[dict], path: Path) -> tuple[int, int] | None:
    """Held-out scores per round: one line per score and target class (an envelope round is not followed by a
    pore round), object F1 (objects matched by centroid) beside the voxel scores."""
    if not scores:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    xs = [s["round"] for s in scores]
    targets = list(dict.fromkeys(s.get("target") for s in scores))
    for key, label, style, colour in SCORE_SERIES:
        for i, target in enumerate(targets):
            pts = [(s["round"], s[key]) for s in scores if s.get("target") == target and s.get(key) is not None]
            if pts:
                name = label + (f" · {target}" if len(targets) > 1 and target else "")
                ax.plot([x for x, _ in pts], [y for _, y in pts], style, color=colour, label=name,
                        alpha=1.0 if i % 2 == 0 else 0.6)
    ax.set_xticks(xs)
    ax.set_xlabel("round")
    ax.set_ylim(0, 1.02)
    ax.set_title("Held-out scores per round", fontsize=10)
    ax.legend(fontsize=7 if len(targets) > 1 else 8, loc="lower right", ncol=2 if len(targets) > 1 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def loss(curve: dict, path: Path, title: str) -> tuple[int, int] | None:
    if "loss" not in curve:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    steps, vals = curve["loss"]
    ax.plot(steps, vals, color="#1f77b4", label="loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    if "lr" in curve:
        ax2 = ax.twinx()
        ax2.plot(*curve["lr"], color="#ff7f0e", alpha=0.6, label="learning rate")
        ax2.set_ylabel("learning rate", color="#ff7f0e")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def overlay(raw: np.ndarray, truth: np.ndarray | None, known: np.ndarray | None, pred: np.ndarray | None,
            path: Path, title: str) -> tuple[int, int]:
    """Three panels of one slice: raw, labels, prediction against labels (TP green, FP red, FN blue)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    grey = np.repeat(raw[..., None].astype(np.float32) / 255.0, 3, axis=2)
    axes[0].imshow(grey, interpolation="nearest")
    axes[0].set_title("raw", fontsize=9)
    lab = grey.copy()
    if truth is not None:
        lab[truth] = 0.5 * lab[truth] + 0.5 * np.array(TP)
        if known is not None:
            neg = known & ~truth
            lab[neg] = 0.85 * lab[neg] + 0.15 * np.array((0.9, 0.8, 0.2))
    axes[1].imshow(lab, interpolation="nearest")
    axes[1].set_title("labels (target green, other labelled yellow)", fontsize=8)
    ov = grey.copy()
    if pred is not None:
        k = known if known is not None else np.ones_like(pred)
        t = truth if truth is not None else np.zeros_like(pred)
        for m, c in ((pred & t, TP), (pred & ~t & k, FP), (~pred & t, FN)):
            ov[m] = 0.35 * ov[m] + 0.65 * np.array(c)
        unl = pred & ~k
        ov[unl] = 0.6 * ov[unl] + 0.4 * np.array((0.8, 0.8, 0.8))
    axes[2].imshow(ov, interpolation="nearest")
    axes[2].set_title("prediction: TP green, FP red, FN blue", fontsize=8)
    for a in axes:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)
