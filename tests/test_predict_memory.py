"""remote.predict.bytes_per_voxel: the estimate the block chooser spends memory by stays near the measured peak.

Too high, and prediction picks small blocks whose halos multiply the compute (a stem-1,2,2 net on vnc-mito
computed 10.3× its output under the old, stem-blind estimate); too low, and a block can exhaust a node's
memory. Each net runs in a fresh process, its forward's peak read from /proc (VmHWM), so only Linux."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from remote.model import UNet3D, UNetConfig
from remote.predict import bytes_per_voxel

ROOT = Path(__file__).resolve().parents[1]
PROBE = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from remote.allocator import keep_freed_memory
keep_freed_memory()
from remote.model import UNet3D, UNetConfig
torch.set_num_threads(1)
net = UNet3D(UNetConfig(levels=4, base=16, voxel_size=(50.0, 4.6, 4.6), stem=tuple(json.loads(sys.argv[2])),
                        kernel_grid=sys.argv[3])).eval()
x = torch.rand(1, 1, 40, 256, 256)
def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key))
before = status("VmRSS")
with torch.no_grad():
    net(x)
print(json.dumps((status("VmHWM") - before) / x.numel()))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak from /proc")
@pytest.mark.parametrize("stem, grid", [((1, 1, 1), "stem"), ((1, 2, 2), "stem"), ((1, 4, 4), "input")])
def test_the_activation_estimate_is_within_a_few_tens_of_percent_of_the_measured_peak(stem, grid):
    """The plain net, the old default and today's (stem 1,4,4, the plan on the input's voxels)."""
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), json.dumps(stem), grid], capture_output=True,
                         text=True, check=True)
    measured = json.loads(out.stdout)
    net = UNet3D(UNetConfig(levels=4, base=16, voxel_size=(50.0, 4.6, 4.6), stem=stem, kernel_grid=grid))
    estimate = bytes_per_voxel(net, torch.device("cpu"))
    assert 0.5 * estimate <= measured <= 1.25 * estimate, (measured, estimate)


def test_a_stem_lowers_the_estimate_so_prediction_can_take_bigger_blocks():
    plain, stem = (bytes_per_voxel(UNet3D(UNetConfig(levels=4, base=16, voxel_size=(50.0, 4.6, 4.6), stem=s)),
                                   torch.device("cpu")) for s in ((1, 1, 1), (1, 2, 2)))
    assert stem < 0.6 * plain
