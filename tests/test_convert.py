"""Conversion to the stored uint8: explicit, exact where the user gives the range, reproducible where it is measured."""

import json

import h5py
import numpy as np
import pytest
import tifffile

from sessions.volumes import convert
from sessions.volumes.convert import Conversion, plan_conversion
from sessions.errors import FibError
from sessions.volumes.sources import open_source


def source_of(tmp_path, vol, name="v.tif"):
    if name.endswith(".h5"):
        with h5py.File(tmp_path / name, "w") as f:
            f["raw"] = vol
        return open_source(f"{tmp_path / name}:/raw")
    tifffile.imwrite(tmp_path / name, vol, photometric="minisblack")
    return open_source(tmp_path / name)


def test_uint8_passes_through_untouched(tmp_path):
    vol = np.random.default_rng(0).integers(0, 256, (4, 16, 16), dtype=np.uint8)
    conv = plan_conversion(source_of(tmp_path, vol), None)
    assert conv.method == "none" and conv.source_dtype == "uint8"
    assert conv.apply(vol) is vol  # no copy on the hot path
    assert plan_conversion(source_of(tmp_path, vol), "none").apply(vol) is vol


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32])
def test_wider_dtype_needs_an_explicit_choice(tmp_path, dtype):
    src = source_of(tmp_path, np.zeros((2, 8, 8), dtype))
    with pytest.raises(FibError) as e:
        plan_conversion(src, None)
    msg = str(e.value)
    assert "v.tif" in msg and np.dtype(dtype).name in msg
    assert "--convert percentile" in msg and "--convert range:LO,HI" in msg
    with pytest.raises(FibError, match="does not fit uint8"):
        plan_conversion(src, "none")


def test_percentiles_map_to_0_and_255_and_are_recorded(tmp_path):
    rng = np.random.default_rng(1)
    vol = rng.gamma(2.0, 3000.0, (20, 64, 64)).clip(0, 65535).astype(np.uint16)
    src = source_of(tmp_path, vol)
    conv = plan_conversion(src, "percentile:1,99")
    # a small volume is sampled whole, so the bounds are the volume's own percentiles
    lo, hi = np.percentile(vol, [1, 99])
    assert (conv.low, conv.high) == pytest.approx((lo, hi))
    assert conv.params["percentiles"] == [1.0, 99.0]
    assert conv.params["sample"]["slices"] == 20 and conv.params["sample"]["voxels"] == vol.size
    out = conv.apply(vol)
    assert out.dtype == np.uint8 and out.shape == vol.shape
    assert (out[vol <= lo] == 0).all() and (out[vol >= hi] == 255).all()
    ref = np.clip((vol.astype(np.float64) - lo) * 255 / (hi - lo), 0, 255)
    assert np.abs(out - ref).max() <= 0.5 + 1e-3  # rounding only
    # the same source gives the same conversion and the same bytes
    again = plan_conversion(open_source(tmp_path / "v.tif"), "percentile:1,99")
    assert again == conv and np.array_equal(again.apply(vol), out)
    record = json.loads(json.dumps(conv.to_json()))
    assert record["method"] == "percentile" and record["low"] == conv.low and record["source_dtype"] == "uint16"
    assert plan_conversion(src, "percentile").params["percentiles"] == [0.1, 99.9]  # CDeep3M's default


def test_sample_is_bounded_and_spread(tmp_path):
    vol = np.zeros((70, 512, 480), np.uint16)
    vol += np.arange(70, dtype=np.uint16)[:, None, None] * 100  # each slice its own value
    conv = plan_conversion(source_of(tmp_path, vol, "big.h5"), "percentile:0,100")
    s = conv.params["sample"]
    assert s["slices"] == 32 and s["z"][0] == 0 and s["z"][-1] == 69
    assert s["voxels"] <= convert.SAMPLE_VOXELS and s["stride"][0] > 1
    assert (conv.low, conv.high) == (0, 6900)  # first and last slices are in the sample


def test_range_is_exact(tmp_path):
    vol = np.array([0, 4, 512, 1020, 2000, 65535], np.uint16).reshape(1, 2, 3)
    conv = plan_conversion(source_of(tmp_path, np.zeros((2, 2, 3), np.uint16)), "range:0,1020")
    assert (conv.method, conv.low, conv.high) == ("range", 0.0, 1020.0)
    assert conv.apply(vol).ravel().tolist() == [0, 1, 128, 255, 255, 255]


def test_int16_negatives(tmp_path):
    vol = np.array([-32768, -1000, -500, 0, 1000, 32767], np.int16).reshape(1, 1, 6)
    conv = plan_conversion(source_of(tmp_path, np.zeros((2, 2, 2), np.int16)), "range:-1000,1000")
    assert conv.apply(vol).ravel().tolist() == [0, 0, 64, 128, 255, 255]


def test_float32_nan_ignored_by_sample_and_zero_in_output(tmp_path):
    vol = np.linspace(-1.0, 1.0, 4 * 10 * 10, dtype=np.float32).reshape(4, 10, 10)
    vol[1, 2, 3] = np.nan
    vol[2, :, :] = np.nan
    conv = plan_conversion(source_of(tmp_path, vol), "percentile:0,100")
    assert np.isfinite([conv.low, conv.high]).all()
    assert conv.params["sample"]["non_finite_ignored"] == 101
    out = conv.apply(vol)
    assert out[1, 2, 3] == 0 and (out[2] == 0).all()
    assert out[0, 0, 0] == 0 and out[3, 9, 9] == 255


def test_constant_volume_widened_and_recorded(tmp_path):
    vol = np.full((3, 8, 8), 700, np.uint16)
    conv = plan_conversion(source_of(tmp_path, vol), "percentile")
    assert conv.high > conv.low and "widened" in conv.params
    with np.errstate(all="raise"):
        assert (conv.apply(vol) == 0).all()


def test_large_blocks_convert_piecewise_like_small_ones():
    """apply works in bounded pieces; piece edges must not show in the result."""
    conv = Conversion("range", 100.0, 60000.0, {}, "uint16")
    block = np.random.default_rng(2).integers(0, 65535, (3, 1000, 1100), dtype=np.uint16)  # > 3 pieces
    assert block.size > 3 * convert.PIECE
    whole = conv.apply(block)
    per_slice = np.stack([conv.apply(block[z:z + 1, :7]) for z in range(3)])
    np.testing.assert_array_equal(whole[:, :7], per_slice[:, 0])
    np.testing.assert_array_equal(conv.apply(block[:, ::2]), whole[:, ::2])  # non-contiguous input too


@pytest.mark.parametrize("spec", ["percentile:99,1", "percentile:0,101", "percentile:-1,50", "range:5",
                                  "range:a,b", "range:10,10", "range:nan,5", "range:0,inf", "range", "clip",
                                  "none:3", "percentile:1;99"])
def test_bad_specs_refused(tmp_path, spec):
    src = source_of(tmp_path, np.zeros((2, 4, 4), np.uint16))
    with pytest.raises(FibError) as e:
        plan_conversion(src, spec)
    assert spec in str(e.value) and "\n" not in str(e.value)


def test_apply_into_a_reused_buffer():
    conv = Conversion("range", 0.0, 1020.0, {}, "uint16")
    block = np.array([0, 4, 512, 1020], np.uint16).reshape(1, 2, 2)
    buf = np.full((1, 2, 2), 9, np.uint8)
    assert conv.apply(block, out=buf) is buf and buf.ravel().tolist() == [0, 1, 128, 255]
    with pytest.raises(ValueError):
        conv.apply(block, out=np.empty((1, 2, 3), np.uint8))
