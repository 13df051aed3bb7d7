"""Memory layout and precision on this CPU: contiguous float32, channels_last_3d float32 (what jobs run),
and channels_last_3d with bf16 autocast, for a training step and a forward.

Each measurement is a fresh process with the job's allocator (remote/allocator.py), the modes alternating
(A B C A B C ...), so a drift in the machine's load shows as a spread rather than as a ratio. Prints seconds
per call, the ratio to contiguous float32, and whether the mode is reproducible: the training processes of a
mode, which train the same net on the same batches, end on bit-identical weights (a checksum of them); the
forwards' largest difference from contiguous float32's sigmoid, in uint8 probability levels.

    python benchmarks/cpu_layout.py [--repeats 2] [--threads 2]

Workloads: the anisotropic net for 4.6 nm voxels that was the default until 2026-12-05 (4 levels, base 16,
stem 1,2,2): 10 training steps
(AdamW, masked BCE + Dice, batch 2 of 4×256×256, fresh random batches) and an eval forward (one pass) of a
prediction block's input (40×448×448), and the same for the plain net of 8 nm isotropic voxels (32×96×96
patches, a 96×192×192 block).
"""

from __future__ import annotations

import statistics

from cpu_allocator import alternating, arguments

MODES = ("fp32", "fp32-cl", "bf16-cl")

PROBE = r"""
import copy, json, sys, time
sys.path.insert(0, sys.argv[1])
from remote.allocator import keep_freed_memory
keep_freed_memory()
import torch
from remote.model import UNet3D, UNetConfig
from remote.train import masked_loss
mode, (net_name, workload) = sys.argv[2], sys.argv[3].split(":")
torch.set_num_threads(int(sys.argv[4]))
torch.manual_seed(0)
aniso = net_name == "stem"
cfg = UNetConfig(voxel_size=(50, 4.6, 4.6), stem=(1, 2, 2)) if aniso else UNetConfig(voxel_size=(8, 8, 8))
fmt = torch.contiguous_format if mode == "fp32" else torch.channels_last_3d
bf16 = mode == "bf16-cl"
net = UNet3D(cfg).to(memory_format=fmt)
def run(model, x):
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        return model(x.contiguous(memory_format=fmt)).float()
out = {}
if workload == "train":
    opt = torch.optim.AdamW(net.parameters(), 1e-3)
    g = torch.Generator().manual_seed(1)
    shape = (2, 1, 4, 256, 256) if aniso else (2, 1, 32, 96, 96)
    def call():
        x, y, m = torch.randn(shape, generator=g), torch.rand(shape, generator=g) > 0.5, torch.rand(shape, generator=g) > 0.3
        opt.zero_grad()
        masked_loss(run(net, x), y.float(), m.float()).backward()
        opt.step()
    warm, n = 2, 10
else:
    net.eval()
    net.tta = "none"
    x = torch.randn((1, 1, 40, 448, 448) if aniso else (1, 1, 96, 192, 192))
    ref = copy.deepcopy(net).to(memory_format=torch.contiguous_format)
    def call():
        with torch.no_grad():
            return run(net, x)
    warm, n = 1, 3
for _ in range(warm):
    call()
t0 = time.perf_counter()
for _ in range(n):
    y = call()
out["s"] = (time.perf_counter() - t0) / n
if workload == "train":
    out["checksum"] = repr(sum(p.double().sum().item() for p in net.parameters()))
else:
    with torch.no_grad():
        out["levels"] = float((torch.sigmoid(y) - torch.sigmoid(ref(x))).abs().max() * 255)
print(json.dumps(out))
"""


def main() -> None:
    args = arguments(__doc__, "mode")
    print("| net | workload | mode | s / call (runs) | contiguous fp32 ÷ mode | reproducible |")
    print("|---|---|---|---|---|---|")
    for net in ("stem", "plain"):
        for workload in ("train", "forward"):
            runs = alternating(MODES, f"{net}:{workload}", args, PROBE)
            base = statistics.mean(r["s"] for r in runs["fp32"])
            for mode, rs in runs.items():
                s = statistics.mean(r["s"] for r in rs)
                spread = ", ".join(f"{r['s']:.3f}" for r in rs)
                if workload == "train":
                    same = "bit-identical weights" if len({r["checksum"] for r in rs}) == 1 else "**weights differ**"
                else:
                    same = f"max {max(r['levels'] for r in rs):.2f} uint8 levels from contiguous fp32"
                print(f"| {'stem 1,2,2, 4.6 nm' if net == 'stem' else 'plain, 8 nm'} | {workload} | {mode} | "
                      f"{s:.3f} ({spread}) | {base / s:.2f} | {same} |")


if __name__ == "__main__":
    main()
