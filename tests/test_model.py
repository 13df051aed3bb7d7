"""The U-Net's anisotropy rules, the masked loss, and seam-free blockwise prediction."""

import numpy as np
import pytest
import torch

from remote import predict
from remote.model import UNet3D, UNetConfig
from remote.train import lr_factor, masked_loss
from sessions.volumes import omezarr
from sessions.geometry import Box


def test_anisotropic_plan_never_pools_coarse_axis():
    cfg = UNetConfig(voxel_size=(50, 4.6, 4.6), levels=4)
    assert cfg.pools == [(1, 2, 2)] * 3
    assert cfg.kernels[:3] == [(1, 3, 3)] * 3 and cfg.kernels[3] == (3, 3, 3)  # xy caught up at 36.8 nm
    iso = UNetConfig(voxel_size=(8, 8, 8), levels=3)
    assert iso.pools == [(2, 2, 2)] * 2 and iso.kernels == [(3, 3, 3)] * 3


def test_a_stem_plans_the_levels_at_the_coarser_voxel_size_and_keeps_the_inputs_grid():
    cfg = UNetConfig(voxel_size=(50, 4.6, 4.6), levels=4, stem=(1, 2, 2))
    assert cfg.pools == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]          # 9.2 nm: xy catches z up a level sooner
    assert cfg.divisor == (2, 16, 16) and cfg.full_kernel == (1, 3, 3)
    net = UNet3D(UNetConfig(voxel_size=(50, 4.6, 4.6), levels=3, base=4, stem=(1, 2, 2))).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 2, 64, 64)).shape == (1, 1, 2, 64, 64)


def test_the_kernel_plan_may_be_drawn_on_the_inputs_voxels_under_a_stem():
    """kernel_grid "input": the levels run on the stem's grid, but which of them convolve and pool across z is
    decided at the volume's voxel size, as for the plain net: a thin z halo on a thin ssTEM stack."""
    plain = UNetConfig(voxel_size=(50, 4.6, 4.6), levels=4)
    cfg = UNetConfig(voxel_size=(50, 4.6, 4.6), levels=4, stem=(1, 4, 4), kernel_grid="input")
    assert (cfg.kernels, cfg.pools) == (plain.kernels, plain.pools)
    assert cfg.divisor == (1, 32, 32)
    on_stem = UNetConfig(voxel_size=(50, 4.6, 4.6), levels=4, stem=(1, 4, 4))
    assert on_stem.pools == [(1, 2, 2), (2, 2, 2), (2, 2, 2)] and on_stem.divisor == (4, 32, 32)
    halo = [predict.block_halo(UNet3D(c)) for c in (cfg, on_stem)]
    assert halo[0][0] < halo[1][0] and halo[0][1:] == halo[1][1:]  # z halo 2 against 24; in-plane the same
    # saved and loaded with its grid; a config from before the option reads as "stem", the plan it was made with
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    old = on_stem.to_dict()
    del old["kernel_grid"]
    assert UNetConfig.from_dict(old) == on_stem
    with pytest.raises(ValueError, match="kernel_grid 'voxels': one of stem, input"):
        UNetConfig(voxel_size=(50, 4.6, 4.6), stem=(1, 4, 4), kernel_grid="voxels")


def test_a_model_saved_before_stems_loads_as_the_plain_net():
    old = UNetConfig(voxel_size=(8, 8, 8), levels=2, base=4).to_dict()
    del old["stem"]
    cfg = UNetConfig.from_dict(old)
    assert cfg.stem == (1, 1, 1)
    assert not any(k.startswith("stem") for k in UNet3D(cfg).state_dict())


def test_test_time_flips_average_the_mirror_images_logits_in_eval_mode_only():
    torch.manual_seed(0)
    net = UNet3D(UNetConfig(voxel_size=(50, 4.6, 4.6), levels=2, base=4, stem=(1, 2, 2))).eval()
    x = torch.rand(1, 1, 2, 32, 32)
    with torch.no_grad():
        one = net(x)
        assert not torch.allclose(net(x.flip(-1)).flip(-1), one, atol=1e-4)  # one pass is not mirror-symmetric
        net.tta = "flips"
        four = net(x)
        want = (one + net.single(x.flip(-1)).flip(-1) + net.single(x.flip(-2)).flip(-2)
                + net.single(x.flip(-2, -1)).flip(-2, -1)) / 4
        assert torch.allclose(four, want, atol=1e-6)
        for dims in ((-1,), (-2,)):  # the average is: a mirrored input gives the mirrored output
            assert torch.allclose(net(x.flip(dims)).flip(dims), four, atol=1e-5)
        net.train()
        assert torch.allclose(net(x), net.single(x))  # training runs one pass (BatchNorm in batch mode both times)


def test_a_model_is_loaded_with_the_test_time_flips_it_was_saved_with(tmp_path):
    from remote.checkpoints import load_model, save

    cfg = UNetConfig(voxel_size=(8, 8, 8), levels=2, base=4)
    state = UNet3D(cfg).state_dict()
    save({"model": state, "config": cfg.to_dict(), "tta": "flips"}, tmp_path / "new.pt")
    save({"model": state, "config": cfg.to_dict()}, tmp_path / "old.pt")  # saved before test-time flips
    assert load_model(tmp_path / "new.pt")[0].tta == "flips"
    assert load_model(tmp_path / "old.pt")[0].tta == "none"


@pytest.mark.parametrize("stem", [(1, 1, 1), (1, 2, 2), (2, 2, 2)])
def test_receptive_radius_bounds_what_an_output_voxel_sees(stem):
    """The halo prediction pads with: no input voxel beyond it may change an output voxel."""
    torch.manual_seed(0)
    net = UNet3D(UNetConfig(voxel_size=(8, 4, 4), levels=3, base=4, stem=stem)).eval()
    x = torch.randn(1, 1, 48, 160, 160, requires_grad=True)
    c = (24, 80, 80)
    net(x)[0, 0, c[0], c[1], c[2]].backward()
    seen = np.argwhere(x.grad[0, 0].abs().numpy() > 0)
    reach = np.abs(seen - np.array(c)).max(axis=0)
    radius = np.array(predict.receptive_radius(net))
    assert (reach <= radius).all(), (reach, radius)
    assert (reach >= radius // 2).all()                               # an upper bound, not a wild one


def test_masked_loss_ignores_unlabelled_voxels():
    logits = torch.randn(1, 1, 4, 8, 8, requires_grad=True)
    tgt = (torch.rand(1, 1, 4, 8, 8) > 0.5).float()
    mask = torch.zeros_like(tgt)
    mask[..., :2, :, :] = 1
    masked_loss(logits, tgt, mask).backward()
    assert logits.grad[..., 2:, :, :].abs().max() == 0
    assert logits.grad[..., :2, :, :].abs().max() > 0
    # changing the unlabelled targets changes nothing
    tgt2 = tgt.clone()
    tgt2[..., 2:, :, :] = 1 - tgt2[..., 2:, :, :]
    assert torch.allclose(masked_loss(logits, tgt, mask), masked_loss(logits, tgt2, mask))


def test_lr_schedule_warms_up_and_decays():
    f = [lr_factor(i, 1000, 50) for i in range(1000)]
    assert f[0] < f[49] == 1.0 and f[-1] < 0.02 and all(a >= b for a, b in zip(f[50:], f[51:]))


def _stitched(model, raw, block, halo):
    out = np.zeros(raw.shape, np.uint8)
    for core in predict.plan_blocks(raw.shape, block):
        out[core.slices] = predict.predict_block(model, raw, core, halo, model.cfg.divisor, torch.device("cpu"))
    return out


@pytest.mark.parametrize("voxel, stem, grid", [((8, 8, 8), (1, 1, 1), "stem"), ((40, 8, 8), (1, 1, 1), "stem"),
                                               ((40, 4, 4), (1, 2, 2), "stem"), ((20, 4, 4), (1, 4, 4), "input")])
def test_blockwise_prediction_has_no_seams(voxel, stem, grid):
    torch.manual_seed(0)
    model = UNet3D(UNetConfig(voxel_size=voxel, levels=3, base=4, stem=stem, kernel_grid=grid)).eval()
    with torch.no_grad():  # a random net's output is nearly flat at p=0.5: spread it so seams would show
        model.head.weight.mul_(50)
    raw = np.random.default_rng(0).integers(0, 255, (32, 128, 128), dtype=np.uint8)
    halo = tuple(predict.round_up(r, d) for r, d in zip(predict.receptive_radius(model), model.cfg.divisor))
    whole = predict.predict_block(model, raw, Box((0, 0, 0), raw.shape), halo, model.cfg.divisor,
                                  torch.device("cpu"))
    blocks = _stitched(model, raw, (16, 64, 64), halo)
    diff = np.abs(blocks.astype(int) - whole.astype(int))
    assert diff.max() <= 1, "blockwise output differs from the whole-volume pass"  # ≤ 1: float rounding only
    # the same tiling without a halo does show seams: the test can fail
    seams = np.abs(_stitched(model, raw, (16, 64, 64), (0, 0, 0)).astype(int) - whole.astype(int))
    assert seams.max() > 3


def test_pyramid_of_prediction_matches_raw_levels(tmp_path):
    ms = omezarr.create(tmp_path / "p.ome.zarr", (20, 64, 64), (50, 5, 5))
    assert [s for s in ms.scales][1] == (50, 10, 10)
