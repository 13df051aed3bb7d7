"""Pilot tests of the TUI on a real session with a real (sleeping) job process."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tifffile
from textual.widgets import DataTable, OptionList

from fibtui.tui.app import FibApp
from fibtui.tui.screens.action_form import ActionForm
from fibtui.tui.screens.dialogs import ConfirmScreen, FormScreen
from fibtui.tui.screens.session import SessionScreen
from fibtui.tui.screens.viewer import SliceView, View, ViewerScreen, build_frame
from fibtui.tui.widgets import halfblock
from sessions import jobs, journal, labels, rounds
from sessions.jobfiles import STDERR, append_event
from sessions.volumes import catalog, omezarr
from sessions.volumes.slices import SliceSource
from sessions.workspace import init_session, open_session


@pytest.fixture
def session(tmp_path):
    """Volume, round, crop, message, note, and a RUNNING train job backed by a live process."""
    s = init_session(tmp_path / "s")
    raw = np.random.default_rng(1).integers(0, 256, (16, 64, 64), dtype=np.uint8)
    catalog.write_volume(s, "vol", raw, (8, 8, 8), source="test")
    r = rounds.new_round(s)
    crop = np.ones((4, 16, 16), np.uint8)
    crop[1:3, 4:12, 4:12] = 2
    tifffile.imwrite(tmp_path / "crop.tif", crop, photometric="minisblack")
    labels.add_crop(s, r["n"], "vol", tmp_path / "crop.tif", (6, 8, 8), classes=["bg", "mito"])
    journal.add_message(s, "alice", "please check crop 1", round_n=1)
    journal.add_note(s, "relabelled crop 1", "missed two mitochondria", "bob", round_n=1)
    jobs.finish(s, jobs.create(s, r["n"], "predict", {"volume": {"name": "vol"}}, "local"), "COMPLETED")
    job = jobs.create(s, r["n"], "train", {"volume": {"name": "vol"}}, "local")
    d = jobs.job_dir(s, job).resolve()
    # a process whose command line names the job dir is what the local executor recognises as the job
    proc = subprocess.Popen(["/bin/sh", "-c", "sleep 60", str(d)], start_new_session=True)
    s.db["jobs"].update(job["id"], {"external_id": str(proc.pid)})
    append_event(d, "started", pid=proc.pid)
    append_event(d, "progress", step=120, total=400, loss=0.31)
    (d / STDERR).write_text("loading crops\niteration 120 done\n")
    s.close()
    yield tmp_path / "s", job["id"]
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the shell and its sleep
    proc.wait()


async def wait_for(pilot, predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out waiting for the UI"
        await pilot.pause(0.05)


def plain(widget) -> str:
    return str(widget.content)


def options(screen, list_id: str) -> list[str]:
    return [str(o.prompt) for o in screen.query_one(list_id, OptionList).options]


def row(app, table: str, key: str) -> list[str]:
    return [str(c) for c in app.screen.query_one(table, DataTable).get_row(key)]


async def test_session_screen_shows_the_session(session):
    root, job_id = session
    app = FibApp(root, refresh_s=0.5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.screen
        assert isinstance(screen, SessionScreen)
        await wait_for(pilot, lambda: screen.snap is not None and screen.query_one("#jobs", DataTable).row_count)
        # the first paint is what SQLite holds; the first poll (next tick) folds the job's events
        await wait_for(pilot, lambda: row(app, "#jobs", job_id)[1] == "RUNNING")
        assert row(app, "#rounds", "1")[:4] == ["1", "—", "scratch", "1"]
        job = row(app, "#jobs", job_id)
        assert job[1] == "RUNNING" and "30%" in job[2] and job[3] == "it 120/400 loss 0.3100"
        assert "alice: please check crop 1" in options(screen, "#thread")[-1]
        assert "relabelled crop 1 — missed two mitochondria" in options(screen, "#interventions")[-1]
        await wait_for(pilot, lambda: "iteration 120 done" in plain(screen.query_one("#log Static")))
        assert screen.snap.curves["loss"] == ([120], [pytest.approx(0.31)])
        assert screen.query_one("#jobs").border_subtitle.startswith("updated")
        assert {"Open viewer", "Write message", "Add note", "Cancel job", "Refresh", "Help", "Quit"} <= {
            c.title for c in app.get_system_commands(screen)}

        # the selection survives refreshes, also when a new job row is inserted above it
        table = screen.query_one("#jobs", DataTable)
        await pilot.press("down")
        await wait_for(pilot, lambda: screen.selected_job == "r1-predict-1")
        s = open_session(root)
        jobs.create(s, 1, "evaluate", {}, "local")
        s.close()
        await pilot.press("r")
        await wait_for(pilot, lambda: table.row_count == 3)
        assert table.cursor_row == 2 and screen.selected_job == "r1-predict-1"


async def test_viewer_keys_change_the_view(session):
    root, _ = session
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("v")
        screen = app.screen
        assert isinstance(screen, ViewerScreen)
        status = screen.query_one("#status")
        await wait_for(pilot, lambda: "z 8/15" in plain(status))
        await wait_for(pilot, lambda: screen.query_one(SliceView).strips)
        strip = screen.query_one(SliceView).strips[0]
        assert set(strip.text) == {"▀"} and strip.cell_length == screen.query_one(SliceView).size.width
        await pilot.press("j")
        assert "z 9/15" in plain(status)
        await pilot.press("K")
        assert "z 0/15" in plain(status)
        before = plain(status)
        await pilot.press("plus")
        zoomed = plain(status)
        assert "zoom" in zoomed and zoomed != before
        await pilot.press("a")
        assert "│ xz │ y " in plain(status)
        await pilot.press("o")
        assert plain(status).split("\n")[0].endswith("overlay labels")
        assert "■ mito" in plain(status)
        await pilot.press("escape")
        assert isinstance(app.screen, SessionScreen)


async def test_message_and_note_forms_write_rows(session):
    root, _ = session
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("m")
        assert isinstance(app.screen, FormScreen)
        await pilot.press(*"crop 2 is ready", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and
                       "crop 2 is ready" in options(app.screen, "#thread")[-1])
        await pilot.press("n")
        await pilot.press(*"paused", "tab", *"waiting for labels", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SessionScreen) and
                       "paused — waiting for labels" in options(app.screen, "#interventions")[-1])
        await pilot.press("m")
        await pilot.press(*"which side?")  # a bad reply-to stays in the form with one line
        form = app.screen
        form.query_one("#field-reply_to").value = "99"
        await pilot.press("enter")
        await wait_for(pilot, lambda: "99" in str(form.query_one(".error").content))
        await pilot.press("escape")
    s = open_session(root)
    try:
        assert [m["text"] for m in journal.messages(s)] == ["please check crop 1", "crop 2 is ready"]
        assert journal.notes(s)[-1]["action"] == "paused"
    finally:
        s.close()


async def test_cancel_asks_then_cancels(session):
    root, job_id = session
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.job(job_id) is not None and screen.selected_job == job_id)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ActionForm))
        assert app.screen.query_one("#field-job").value == job_id  # the selected job
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")  # the default answer leaves the job alone
        await pilot.press("escape")
        assert isinstance(app.screen, SessionScreen)
        assert row(app, "#jobs", job_id)[1] == "RUNNING"
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ActionForm))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: row(app, "#jobs", job_id)[1] == "CANCELLED")
    s = open_session(root)
    try:
        assert jobs.get(s, job_id)["reason"] == "cancelled by the curator"
    finally:
        s.close()


def test_halfblock_cells_carry_two_pixels():
    img = np.array([[0, 10], [20, 30], [40, 50], [60, 70]], np.uint8)
    strips = halfblock.to_strips(img)
    assert len(strips) == 2
    cells = [(seg.text, seg.style.color.triplet, seg.style.bgcolor.triplet) for strip in strips for seg in strip]
    assert cells == [("▀", (0, 0, 0), (20, 20, 20)), ("▀", (10, 10, 10), (30, 30, 30)),
                     ("▀", (40, 40, 40), (60, 60, 60)), ("▀", (50, 50, 50), (70, 70, 70))]


def test_anisotropic_slices_keep_their_aspect(tmp_path):
    ms = omezarr.create(tmp_path / "a.ome.zarr", (4, 8, 8), (24, 8, 8))
    ms.levels[0][:] = (np.arange(4, dtype=np.uint8) * 60)[:, None, None].repeat(8, 1).repeat(8, 2)
    src = SliceSource(ms)
    # 12 pixel rows of 8 nm show the 4 z-slices of 24 nm: each slice three rows tall
    frame = build_frame(src, View("xz", (2.0, 4.0, 4.0), out_nm=8.0, overlay=3), width=8, height=6)
    assert frame[:, 0, 0].tolist() == np.repeat([0, 60, 120, 180], 3).tolist()
