"""Peak memory of `fibtui ingest` on a ~2 GB and a ~20 GB source, side by side in one run.

Both sources have the same 2048×2048 slices (real EM texture, vnc-mito tiled; synthetic without
it) and differ only in depth, so flat memory means the two peaks match: the target is within 10 %.
Each ingest runs as its own `fibtui ingest` process; its peak RSS comes from the kernel (wait4).

    python benchmarks/ingest_memory.py [--small-gb 2] [--large-gb 20] [--workdir DIR] [--json]

Needs ~2.2× (small + large) GB of free disk in --workdir.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest_throughput import make_source  # noqa: E402


def ingest(src: Path, session: Path) -> dict:
    subprocess.run([sys.executable, "-m", "fibtui", "init", str(session)], check=True, capture_output=True)
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "fibtui", "ingest", str(src), "--session", str(session),
                             "--voxel-size", "8,8,8", "--json"], stdout=subprocess.PIPE)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"fibtui ingest {src} failed with status {status}")
    return {"wall_s": time.perf_counter() - t, "peak_rss_mb": usage.ru_maxrss / 1024,
            "row": json.loads(out)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small-gb", type=float, default=2.0)
    ap.add_argument("--large-gb", type=float, default=20.0)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fibtui-mem-", dir=args.workdir))
    try:
        runs = {}
        for label, gb in (("small", args.small_gb), ("large", args.large_gb)):
            src = work / f"{label}.tif"
            print(f"writing {label} source ({gb} GB)…", file=sys.stderr)
            shape = make_source(src, gb)
            run = ingest(src, work / f"s-{label}")
            size = src.stat().st_size
            runs[label] = {"shape": shape, "source_gb": size / 1e9, "wall_s": run["wall_s"],
                           "gb_per_s": size / run["wall_s"] / 1e9, "peak_rss_mb": run["peak_rss_mb"],
                           "levels": run["row"]["levels"]}
            print(f"{label}: {runs[label]}", file=sys.stderr)
            shutil.rmtree(work / f"s-{label}")
            src.unlink()
        ratio = runs["large"]["peak_rss_mb"] / runs["small"]["peak_rss_mb"]
        result = {"runs": runs, "rss_ratio_large_to_small": ratio, "within_10_percent": abs(ratio - 1) <= 0.10}
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print("| source | shape | GB | wall s | GB/s | peak RSS MB |")
            print("|---|---|---|---|---|---|")
            for label, r in runs.items():
                print(f"| {label} | {'×'.join(map(str, r['shape']))} | {r['source_gb']:.1f} | {r['wall_s']:.0f} | "
                      f"{r['gb_per_s']:.2f} | {r['peak_rss_mb']:.0f} |")
            print(f"peak RSS large ÷ small: {ratio:.3f} (target: within 10 %)")
        print(f"reproduce: python benchmarks/ingest_memory.py --small-gb {args.small_gb} --large-gb {args.large_gb}",
              file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
