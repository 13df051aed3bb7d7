"""`fibtui measure`: the scientist's answer from the generator's truth masks, and its bad inputs."""

import json

import numpy as np
import pytest
import tifffile

from conftest import db_snapshot, run_cli
from sessions import synth


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("measure")
    scene = synth.make_scene((48, 192, 192), 7, voxel_size=(12.0,) * 3)
    synth.write_tiff(scene, root / "vol.tif", root / "vol.labels.tif")
    s = root / "session"
    run_cli("init", s, check=True)
    run_cli("ingest", root / "vol.tif", "--session", s, "--voxel-size", "12,12,12", check=True)
    run_cli("round", "new", "--session", s, check=True)
    return root, s, json.loads((root / "vol.truth.json").read_text())


def test_measure_on_truth_masks_matches_truth_json(synthetic):
    root, s, truth = synthetic
    lab = root / "vol.labels.tif"
    proc = run_cli("measure", "--session", s, "--pores-labels", lab, "--envelope-labels", lab, "--json", check=True)
    out = json.loads(proc.stdout)
    r = out["readout"]
    assert r["pores"] == truth["pore_count"]
    assert r["envelope_um2"] == pytest.approx(truth["envelope_area_um2"], rel=0.05)
    assert r["density_per_um2"] == pytest.approx(truth["pore_density_per_um2"], rel=0.05)
    assert out["truth"]["pore_count"] == truth["pore_count"]  # the truth beside the labels is found
    n = r["nuclei"][0]
    assert n["ci95"][0] < n["density_per_um2"] < n["ci95"][1] and n["partial"]
    exports = out["exports"]
    for f in ("pores.parquet", "pores.csv", "nuclei.parquet", "nuclei.csv"):
        assert (s / "exports" / out["job"] / f).is_file(), f
    assert exports.endswith(out["job"])
    text = run_cli("measure", "--session", s, "--pores-labels", lab, "--envelope-labels", lab, check=True).stdout
    assert f"nucleus 1: {truth['pore_count']} pores" in text and f"truth {truth['pore_count']} pores" in text
    csv = run_cli("measure", "--session", s, "--pores-labels", lab, "--envelope-labels", lab, "--csv",
                  check=True).stdout.splitlines()
    assert csv[0].startswith("nucleus,pores,envelope_um2") and csv[1].startswith(f"1,{truth['pore_count']},")
    log = json.loads(run_cli("note", "list", "--session", s, "--json", check=True).stdout)
    assert any("measure" in json.dumps(e) for e in log)


def test_measure_split_flag_is_recorded_in_the_spec(synthetic):
    """`--split` (a bare flag) and `--array-tasks N` reach the job's spec; on the truth masks, whose pores never
    touch, splitting changes nothing."""
    from sessions.measure import split_settings

    root, s, truth = synthetic
    lab = root / "vol.labels.tif"
    out = json.loads(run_cli("measure", "--session", s, "--pores-labels", lab, "--envelope-labels", lab, "--split",
                             "--array-tasks", "2", "--json", check=True).stdout)
    assert out["readout"]["pores"] == truth["pore_count"]
    spec = json.loads((s / "jobs" / out["job"] / "spec.json").read_text())
    assert spec["pores"]["split"] == split_settings() and spec["array_tasks"] == 2
    assert "split" not in spec["envelope"]
    log = json.loads(run_cli("note", "list", "--session", s, "--json", check=True).stdout)
    assert any(e.get("params", {}).get("split") is True for e in log if "measure" in json.dumps(e))
    proc = run_cli("measure", "--session", s, "--pores-labels", lab, "--envelope-labels", lab, "--array-tasks", "0")
    assert proc.returncode == 2 and "--array-tasks '0': must be ≥ 1" in proc.stderr


def test_bad_inputs_are_one_line_and_write_nothing(synthetic, tmp_path):
    root, s, truth = synthetic
    lab = root / "vol.labels.tif"
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((16, 64, 64), np.uint8))
    empty = tmp_path / "empty.labels.tif"
    tifffile.imwrite(empty, np.zeros((48, 192, 192), np.uint8))
    (tmp_path / "empty.truth.json").write_text(json.dumps(truth))  # generator numbering, no envelope voxel
    before = db_snapshot(s)
    cases = [
        (("--pores-labels", small, "--envelope-labels", lab), "shape"),
        (("--pores-labels", lab, "--envelope-labels", empty), "no nucleus"),
        (("--pores", "pore", "--envelope-labels", lab), "never trained"),
    ]
    for args, words in cases:
        proc = run_cli("measure", "--session", s, *args)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], proc.stderr
    assert db_snapshot(s) == before


async def test_tui_answer_panel_shows_the_latest_measurement(synthetic):
    """After the CLI test above measured the truth masks: the session screen's Answer panel shows it."""
    import asyncio

    from fibtui.tui.app import FibApp
    from fibtui.tui.widgets.answer import answer_renderable
    from sessions import measure
    from sessions.workspace import open_session

    root, s, truth = synthetic
    ans = measure.latest(open_session(s))
    if ans is None:
        pytest.skip("needs the measurement made by test_measure_on_truth_masks_matches_truth_json")
    app = FibApp(s, refresh_s=5)
    async with app.run_test(size=(200, 60)) as pilot:
        screen = app.screen
        for _ in range(300):
            if screen.snap is not None:
                break
            await asyncio.sleep(0.1)
        await pilot.pause()
        panel = screen.query_one("#answer")
        assert panel.display and panel.border_title == f"Answer · {ans['job']}"
    from rich.console import Console

    con = Console(width=120, record=True)
    con.print(answer_renderable(ans))
    text = con.export_text()
    assert str(truth["pore_count"]) in text and "pores" in text and "labels" in text
