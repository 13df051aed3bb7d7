"""An anisotropy-aware 3D U-Net.

Pooling and kernel sizes follow the voxel size (nnU-Net's rule): an axis whose
voxels are already more than twice as coarse as the finest axis is neither
pooled nor convolved across (kernel 1) until the other axes catch up. On a
50 nm × 4.6 nm ssTEM stack that makes the upper levels 2D and the bottom 3D;
on isotropic FIB-SEM it is a plain 3D U-Net. BatchNorm (not instance/group
norm) keeps the eval-mode net translation-equivariant, so blockwise
prediction has no seams.

A stem (`stem`, per axis) runs the levels on a coarser grid: the input is
average-pooled by it, and the first level's features are brought back to the
input's grid by a transposed convolution and one convolution that also sees
the full-resolution input, so the output keeps the input's voxels (prediction,
evaluation and export are unchanged). On 4.6 nm ssTEM a (1, 2, 2) stem makes
every level a quarter of the work with twice the context; the net's voxels are
still finer than the structures it segments. (1, 1, 1) is the plain net.

Under a stem the kernel plan can be drawn on two grids (`kernel_grid`). "stem":
on the levels' coarser voxels, so a (1, 4, 4) stem on 50 × 4.6 nm ssTEM sees
18.4 nm in-plane voxels and makes three of four levels 3D, with a z receptive
field (halo 24) wider than a 20-slice stack and a patch of 4 slices pooled to
one. "input": on the volume's voxels, as the plain net would (three 2D levels,
a 3D bottom): the coarser grid's context in-plane, a z halo of 2.

Test-time flips (`tta`, not part of the weights or the config: it is how the
net is applied): in eval mode the forward averages the logits of the input and
its in-plane mirror images (sessions/train_options.TTA). Logits, not probabilities, so the decision
threshold folded into the head's bias (remote/train.calibrated) is the same
threshold after averaging; and in the forward, so prediction, preview,
validation and exports all apply it.

Memory layout: every job runs the net and its inputs in channels_last_3d, on a
CPU too, where oneDNN's kernels measured 1.2-1.3x faster than contiguous
float32 (a train step and a forward, stem and plain nets; benchmarks/cpu_layout.py).
Both layouts are deterministic. bf16 autocast stays CUDA-only: on this
AVX512-BF16 CPU it was 2x faster again, but not bit-reproducible run to run,
and one of a few runs went NaN from its first steps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from sessions.train_options import KERNEL_GRIDS, TTA

LAYOUT = torch.channels_last_3d  # of the net's weights and inputs in every job, on every device (see above)


@dataclass
class UNetConfig:
    levels: int = 4
    base: int = 16
    voxel_size: tuple[float, float, float] = (8.0, 8.0, 8.0)
    in_channels: int = 1
    out_channels: int = 1
    kernels: list[tuple[int, int, int]] = field(default_factory=list)
    pools: list[tuple[int, int, int]] = field(default_factory=list)
    stem: tuple[int, int, int] = (1, 1, 1)
    kernel_grid: str = "stem"  # what configs saved before the option were planned on; new trainings take
                               # sessions/train_options.DEFAULT_KERNEL_GRID (sessions/rounds.train_spec)

    def __post_init__(self):
        self.stem = tuple(int(s) for s in self.stem)
        if self.kernel_grid not in KERNEL_GRIDS:
            raise ValueError(f"kernel_grid {self.kernel_grid!r}: one of {', '.join(KERNEL_GRIDS)}")
        if not self.kernels:
            grid = self.stem if self.kernel_grid == "stem" else (1, 1, 1)
            self.kernels, self.pools = plan([v * s for v, s in zip(self.voxel_size, grid)], self.levels)

    @property
    def full_kernel(self) -> tuple[int, int, int]:
        """The kernel of the stem's full-resolution convolution: the plan's first at the input's voxel size."""
        return plan(self.voxel_size, 1)[0][0]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        d = dict(d)
        d["voxel_size"] = tuple(d["voxel_size"])
        d["kernels"] = [tuple(k) for k in d["kernels"]]
        d["pools"] = [tuple(p) for p in d["pools"]]
        d["stem"] = tuple(d.get("stem", (1, 1, 1)))  # models saved before stems existed have none
        return cls(**d)

    @property
    def divisor(self) -> tuple[int, int, int]:
        """Input extents must be multiples of this (the product of the pools)."""
        out = list(self.stem)
        for p in self.pools:
            out = [o * q for o, q in zip(out, p)]
        return tuple(out)


def plan(voxel_size, levels: int):
    vs = [float(v) for v in voxel_size]
    kernels, pools = [], []
    for lvl in range(levels):
        finest = min(vs)
        coarse = [v > 2 * finest for v in vs]
        kernels.append(tuple(1 if c else 3 for c in coarse))
        if lvl < levels - 1:
            p = tuple(1 if c else 2 for c in coarse)
            pools.append(p)
            vs = [v * q for v, q in zip(vs, p)]
    return kernels, pools


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, k):
        pad = tuple(x // 2 for x in k)
        super().__init__(
            nn.Conv3d(cin, cout, k, padding=pad, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
            nn.Conv3d(cout, cout, k, padding=pad, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True),
        )


class UNet3D(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch = [cfg.base * 2**i for i in range(cfg.levels)]
        self.down = nn.ModuleList()
        cin = cfg.in_channels
        for i in range(cfg.levels):
            self.down.append(ConvBlock(cin, ch[i], cfg.kernels[i]))
            cin = ch[i]
        self.pool = nn.ModuleList(nn.MaxPool3d(p, p) for p in cfg.pools)
        self.upconv = nn.ModuleList(
            nn.ConvTranspose3d(ch[i + 1], ch[i], cfg.pools[i], cfg.pools[i]) for i in range(cfg.levels - 1)
        )
        self.up = nn.ModuleList(ConvBlock(2 * ch[i], ch[i], cfg.kernels[i]) for i in range(cfg.levels - 1))
        out = ch[0]
        if cfg.stem != (1, 1, 1):
            k, out = cfg.full_kernel, max(8, ch[0] // 2)
            self.stem_up = nn.ConvTranspose3d(ch[0], out, cfg.stem, cfg.stem)
            self.stem_out = nn.Sequential(
                nn.Conv3d(out + cfg.in_channels, out, k, padding=tuple(x // 2 for x in k), bias=False),
                nn.BatchNorm3d(out), nn.ReLU(inplace=True))
        self.head = nn.Conv3d(out, cfg.out_channels, 1)
        self.tta = "none"  # a key of TTA; remote.checkpoints.load_model sets the model's own

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.tta == "none":
            return self.single(x)
        flips = TTA[self.tta]
        out = self.single(x)
        for dims in flips[1:]:
            out = out + self.single(x.flip(dims)).flip(dims)
        return out / len(flips)

    def single(self, x: torch.Tensor) -> torch.Tensor:
        """One pass of the net: the logits of `x`."""
        full = x
        if self.cfg.stem != (1, 1, 1):
            x = nn.functional.avg_pool3d(x, self.cfg.stem, self.cfg.stem)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < len(self.pool):
                skips.append(x)
                x = self.pool[i](x)
        for i in reversed(range(len(self.up))):
            x = self.up[i](torch.cat([self.upconv[i](x), skips[i]], dim=1))
        if self.cfg.stem != (1, 1, 1):
            x = self.stem_out(torch.cat([self.stem_up(x), full], dim=1))
        return self.head(x)


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def normalize(raw_u8: torch.Tensor) -> torch.Tensor:
    """uint8 → roughly zero-mean unit-range float, the same in train and predict."""
    return raw_u8.float().div_(127.5).sub_(1.0)
