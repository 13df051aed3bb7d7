"""glibc's default allocator against the one a job sets (remote/allocator.py): train step and forward, CPU.

Each measurement is a fresh process (the allocator is set before torch allocates), alternating default and
kept (A B A B ...), so a drift in the machine's load shows as a spread rather than as a ratio. Prints, per
workload, seconds per call, user and system CPU seconds per call and minor page faults per call, then the
ratio default ÷ kept (> 1: the job's setting is faster).

    python benchmarks/cpu_allocator.py [--repeats 2] [--threads 2]

Workloads: the anisotropic net for 4.6 nm voxels that was the default until 2026-12-05 (4 levels, base 16,
stem 1,2,2): a training step
(AdamW, BCE, batch 2 of 4×256×256) and an eval forward of one prediction block's input (40×448×448).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "kept":
    from remote.allocator import keep_freed_memory
    assert keep_freed_memory()
import torch, torch.nn.functional as F
from remote.model import UNet3D, UNetConfig
torch.set_num_threads(int(sys.argv[4]))
torch.manual_seed(0)
net = UNet3D(UNetConfig(voxel_size=(50, 4.6, 4.6), levels=4, base=16, stem=(1, 2, 2)))
if sys.argv[3] == "train":
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    x, y = torch.randn(2, 1, 4, 256, 256), (torch.rand(2, 1, 4, 256, 256) > 0.5).float()
    def call():
        opt.zero_grad()
        F.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()
    n = 10
else:
    net.eval()
    x = torch.randn(1, 1, 40, 448, 448)
    def call():
        with torch.no_grad():
            net(x)
    n = 3
for _ in range(2):
    call()
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(n):
    call()
dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"s": dt / n, "user": (r1.ru_utime - r0.ru_utime) / n, "sys": (r1.ru_stime - r0.ru_stime) / n,
                  "faults": (r1.ru_minflt - r0.ru_minflt) / n}))
"""


def measure(mode: str, workload: str, threads: int, probe: str = PROBE) -> dict:
    """One fresh process running `probe` (argv: the repository, mode, workload, threads); its JSON line."""
    out = subprocess.run([sys.executable, "-c", probe, str(ROOT), mode, workload, str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def arguments(doc: str, per: str):
    """The command line both CPU probes take (--repeats, --threads); prints the load average first."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=2, help=f"processes per {per} and workload")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average (1 min) before: {f.read().split()[0]}")
    return args


def alternating(modes, workload: str, args, probe: str = PROBE) -> dict[str, list[dict]]:
    """`args.repeats` fresh processes per mode, the modes alternating (A B A B ...): a drift in the machine's
    load shows as a spread within a mode, not as a ratio between modes."""
    runs = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode in modes:
            runs[mode].append(measure(mode, workload, args.threads, probe))
    return runs


def main() -> None:
    args = arguments(__doc__, "allocator")
    print("| workload | allocator | s / call | user s | system s | minor faults | default ÷ kept |")
    print("|---|---|---|---|---|---|---|")
    for workload in ("train", "forward"):
        runs = alternating(("default", "kept"), workload, args)
        mean = {m: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for m, rs in runs.items()}
        ratio = mean["default"]["s"] / mean["kept"]["s"]
        for m, v in mean.items():
            spread = ", ".join(f"{r['s']:.3f}" for r in runs[m])
            print(f"| {workload} | {m} | {v['s']:.3f} ({spread}) | {v['user']:.2f} | {v['sys']:.2f} | "
                  f"{v['faults']:.0f} | {f'**{ratio:.2f}**' if m == 'kept' else ''} |")


if __name__ == "__main__":
    main()
