"""Prediction as a pipeline (read-ahead, batches, write-behind) on CPU: the same bits as the sequential
per-block path, the ledger's promise kept across a resume, thread failures raised (never a hang), and
the block chosen from memory deterministic, chunk-aligned and within the halo target."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from remote import blocks, pipeline, predict
from remote.model import UNet3D, UNetConfig
from sessions.geometry import Box
from sessions.jobfiles import read_events
from sessions.volumes import omezarr

SHAPE = (24, 260, 140)  # with 16×128×128 blocks: 12 blocks of 8 input shapes, some shared
BLOCK = [16, 128, 128]
ANISO_HALO, ANISO_DIV = (2, 56, 56), (1, 8, 8)  # the 4-level U-Net at 50×4.6×4.6 nm (checked below)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A volume OME-Zarr and a tiny random model whose output spreads over the uint8 range."""
    root = tmp_path_factory.mktemp("pipe")
    raw = np.random.default_rng(3).integers(0, 256, SHAPE, dtype=np.uint8)
    ms = omezarr.create(root / "v.ome.zarr", SHAPE, (8, 8, 8))
    ms.levels[0][...] = raw
    torch.manual_seed(0)
    cfg = UNetConfig(voxel_size=(8, 8, 8), base=4, levels=2)
    model = UNet3D(cfg)
    with torch.no_grad():  # a random net's output sits near p = 0.5: spread it so every bit counts
        model.head.weight.mul_(50)
    torch.save({"config": cfg.to_dict(), "model": model.state_dict()}, root / "model.pt")
    spec = {"volume": {"name": "v", "path": str(root / "v.ome.zarr"), "voxel_size": [8, 8, 8]},
            "checkpoint": str(root / "model.pt"), "threads": 1, "device": "cpu", "block": BLOCK}
    return root, spec, raw


@pytest.fixture(scope="module")
def sequential(setup):
    """The one-block-at-a-time path, `predict_block` on every block of the plan."""
    _, spec, _ = setup
    device, _, raw, model, div, halo = predict._load(spec)
    out = np.zeros(SHAPE, np.uint8)
    for core in blocks.plan_blocks(SHAPE, blocks.block_shape(spec)):
        out[core.slices] = predict.predict_block(model, raw, core, halo, div, device)
    return out


def _level0(job: Path) -> np.ndarray:
    return omezarr.open_multiscale(job / "prediction.ome.zarr").levels[0][...]


@pytest.mark.parametrize("batch", [1, 3])
def test_pipeline_is_bit_identical_to_sequential(setup, sequential, tmp_path, batch):
    _, spec, _ = setup
    plan = blocks.plan_blocks(SHAPE, blocks.block_shape(spec))
    shapes = {blocks.input_shape(b.shape, (10, 10, 10), (2, 2, 2)) for b in plan}
    assert len(plan) == 12 and 1 < len(shapes) < len(plan)  # edge blocks of other shapes, and shared shapes
    res = predict.run({**spec, "batch_blocks": batch}, tmp_path)
    assert res["blocks"] == 12 and res["block"] == BLOCK
    assert np.array_equal(_level0(tmp_path), sequential)
    assert sorted((tmp_path / "blocks.done").read_text().split()) == sorted(blocks.block_key(b) for b in plan)
    steps = [e["step"] for e in read_events(tmp_path)[0] if e["type"] == "progress"]
    assert steps == list(range(1, 13))


def test_resume_skips_ledgered_blocks_and_ends_identical(setup, sequential, tmp_path):
    _, spec, _ = setup
    spec = {**spec, "batch_blocks": 2}
    predict.run(spec, tmp_path)
    keys = (tmp_path / "blocks.done").read_text().split()
    kept = set(keys[:5])
    (tmp_path / "blocks.done").write_text("".join(k + "\n" for k in keys[:5]))
    level0 = omezarr.open_multiscale(tmp_path / "prediction.ome.zarr", mode="r+").levels[0]
    for b in blocks.plan_blocks(SHAPE, BLOCK):  # the crash lost every block the ledger does not list
        if blocks.block_key(b) not in kept:
            level0[b.slices] = 0
    (tmp_path / "events.jsonl").unlink()
    predict.run(spec, tmp_path)
    events = read_events(tmp_path)[0]
    assert events[0] == {**events[0], "type": "resumed", "step": 5}
    assert [e["step"] for e in events if e["type"] == "progress"] == list(range(6, 13))  # only the other 7
    assert np.array_equal(_level0(tmp_path), sequential)


def _corrupt_one_chunk(store: Path) -> None:
    chunk = next(p for p in sorted((store / "0" / "c").rglob("*")) if p.is_file())
    chunk.write_bytes(b"not zstd at all")


@pytest.mark.timeout(60)
def test_a_read_error_fails_the_job(setup, tmp_path):
    root, spec, raw = setup
    bad = tmp_path / "bad.ome.zarr"
    omezarr.create(bad, SHAPE, (8, 8, 8)).levels[0][...] = raw
    _corrupt_one_chunk(bad)
    with pytest.raises(Exception, match="(?i)zstd|decompress"):
        predict.run({**spec, "volume": {**spec["volume"], "path": str(bad)}}, tmp_path / "job")


@pytest.mark.timeout(60)
def test_a_write_error_fails_the_job_and_ledgers_nothing_unwritten(setup, tmp_path):
    _, spec, _ = setup
    device, _, raw, model, div, halo = predict._load(spec)
    omezarr.create(tmp_path / "out.ome.zarr", SHAPE, (8, 8, 8))
    read_only = zarr.open_array(tmp_path / "out.ome.zarr" / "0", mode="r")
    plan = blocks.plan_blocks(SHAPE, BLOCK)
    ledger = tmp_path / "blocks.done"
    with pytest.raises(Exception, match="read-only"):
        predict._predict_blocks({"batch_blocks": 2}, plan, read_only, ledger, set(), tmp_path, model=model,
                                raw=raw, halo=halo, div=div, device=device)
    assert ledger.read_text() == ""


@pytest.mark.timeout(30)
def test_read_ahead_raises_the_threads_error_and_stops_when_the_loop_fails():
    def read(i):
        if i == 3:
            raise OSError("disk gone at 3")
        return i

    got = []
    with pytest.raises(OSError, match="disk gone at 3"):
        with pipeline.ReadAhead(range(10), read, depth=1) as items:
            got.extend(items)
    assert got == [0, 1, 2]
    slow = pipeline.ReadAhead(range(1000), lambda i: i, depth=1)
    with pytest.raises(ValueError):
        with slow:
            next(slow)
            raise ValueError("the model failed")
    assert not slow.thread.is_alive()


@pytest.mark.timeout(30)
def test_write_behind_raises_the_threads_error_and_drops_the_rest_when_the_loop_fails():
    written = []

    def write(i):
        if i == 2:
            raise PermissionError("read-only at 2")
        written.append(i)

    with pytest.raises(PermissionError, match="read-only at 2"):
        with pipeline.WriteBehind(write, depth=1) as w:
            for i in range(100):
                w.put(i)
    assert written == [0, 1]
    gate, seen = threading.Event(), []
    w = pipeline.WriteBehind(lambda i: (gate.wait(), seen.append(i)), depth=8)
    with pytest.raises(ValueError):
        with w:
            for i in range(5):
                w.put(i)
            gate.set()
            raise ValueError("the model failed")
    assert not w.thread.is_alive() and len(seen) <= 1
    with pipeline.WriteBehind(lambda i: (time.sleep(0.01), written.append(i)), depth=1) as w:
        for i in range(10, 15):
            w.put(i)
    assert written[-5:] == [10, 11, 12, 13, 14]  # a clean exit writes everything, in order


def test_anisotropic_halo_and_the_issues_overhead():
    model = UNet3D(UNetConfig(voxel_size=(50, 4.6, 4.6), levels=4, base=4))
    div = model.cfg.divisor
    halo = tuple(blocks.round_up(r, d) for r, d in zip(predict.receptive_radius(model), div))
    assert (halo, div) == (ANISO_HALO, ANISO_DIV)
    assert blocks.input_shape((30, 256, 256), halo, div) == (34, 368, 368)
    assert blocks.computed_per_output((30, 512, 512), blocks.DEFAULT_BLOCK, halo, div) == pytest.approx(2.342, 1e-3)


@pytest.mark.parametrize("shape,block", [((40, 300, 140), (16, 128, 128)), ((30, 512, 512), (32, 384, 256))])
def test_computed_per_output_is_the_plans_exact_sum(shape, block):
    plan = blocks.plan_blocks(shape, block)
    total = sum(np.prod(blocks.input_shape(b.shape, ANISO_HALO, ANISO_DIV)) for b in plan)
    assert blocks.computed_per_output(shape, block, ANISO_HALO, ANISO_DIV) == pytest.approx(total / np.prod(shape))


def test_block_choice_meets_the_target_within_memory_on_a_large_volume():
    shape, bpv, budget = (200, 4096, 4096), 768.0, 200e9
    chosen = blocks.choose_block(shape, ANISO_HALO, ANISO_DIV, bpv, budget)
    assert chosen == blocks.choose_block(shape, ANISO_HALO, ANISO_DIV, bpv, budget)  # deterministic
    assert all(b % c == 0 for b, c in zip(chosen, omezarr.DEFAULT_CHUNKS))  # whole chunks: on the grid
    assert blocks.computed_per_output(shape, chosen, ANISO_HALO, ANISO_DIV) <= blocks.HALO_TARGET
    assert blocks.largest_input(shape, chosen, ANISO_HALO, ANISO_DIV) * bpv <= budget
    old = blocks.computed_per_output(shape, blocks.DEFAULT_BLOCK, ANISO_HALO, ANISO_DIV)
    assert old > 2.0


def test_block_choice_stops_at_memory_and_at_the_volume():
    small = blocks.choose_block((200, 4096, 4096), ANISO_HALO, ANISO_DIV, 768.0, 6e9)
    assert blocks.largest_input((200, 4096, 4096), small, ANISO_HALO, ANISO_DIV) * 768 <= 6e9
    assert blocks.computed_per_output((200, 4096, 4096), small, ANISO_HALO, ANISO_DIV) > blocks.HALO_TARGET
    whole = blocks.choose_block((30, 512, 512), ANISO_HALO, ANISO_DIV, 768.0, 1e12)
    assert whole == (32, 512, 512)  # the whole volume in one block: the floor, mirrored border halos
    assert blocks.computed_per_output((30, 512, 512), whole, ANISO_HALO, ANISO_DIV) == pytest.approx(1.683, 1e-3)
    assert blocks.choose_block((30, 512, 512), ANISO_HALO, ANISO_DIV, 768.0, 1.0) == omezarr.DEFAULT_CHUNKS


def test_a_run_without_a_block_records_its_choice_and_a_resume_keeps_it(setup, sequential, tmp_path):
    _, spec, _ = setup
    auto = {k: v for k, v in spec.items() if k != "block"}
    res = predict.run(auto, tmp_path)
    plan = json.loads((tmp_path / predict.BLOCK_PLAN).read_text())
    assert res["block"] == plan["block"] and all(b % c == 0 for b, c in zip(plan["block"], omezarr.DEFAULT_CHUNKS))
    device, _, raw, model, div, halo = predict._load(auto)
    other = [16, 128, 128]
    (tmp_path / predict.BLOCK_PLAN).write_text(json.dumps({"block": other}))
    kw = dict(model=model, halo=halo, div=div, device=device)
    assert predict._chosen_block(auto, tmp_path, SHAPE, True, **kw) == tuple(other)  # resuming: the recorded grid
    assert predict._chosen_block(auto, tmp_path, SHAPE, False, **kw) == tuple(plan["block"])  # fresh: chosen again
    assert predict._array_block(auto, {"tasks": 2, "blocks": 4}) == blocks.DEFAULT_BLOCK
    assert predict._array_block(auto, {"tasks": 2, "blocks": 4, "block": other}) == tuple(other)


def test_preview_signature_still_predicts_one_box(setup, sequential):
    _, spec, _ = setup
    device, _, raw, model, div, halo = predict._load(spec)
    core = Box((16, 128, 0), (8, 128, 128))
    assert np.array_equal(predict.predict_block(model, raw, core, halo, div, device), sequential[core.slices])
