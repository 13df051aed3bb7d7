"""The round run from the TUI: every action by its key, its form, its validation, its log entry.

Real session on disk, real local jobs on a tiny volume (a U-Net of 4 channels
and 2 levels trains in seconds on one thread), driven with Textual's Pilot.
"""

from __future__ import annotations

import time

import pytest
import tifffile
from conftest import blobs_volume, db_snapshot
from textual.widgets import DataTable, Input, OptionList, Static

from fibtui.actions import ACTIONS
from fibtui.tui.app import FibApp
from fibtui.tui.screens.action_form import ActionForm
from fibtui.tui.screens.dialogs import ConfirmScreen
from fibtui.tui.screens.session import SessionScreen
from sessions import interventions, jobs, labels, rounds
from sessions.train_options import DEFAULT_ITERATIONS
from sessions.volumes import catalog
from sessions.workspace import init_session, open_session

TINY = {"iterations": "12", "patch": "8,32,32", "batch": "1", "base": "4", "levels": "2", "threads": "1"}


@pytest.fixture
def tiny(tmp_path):
    """A session with a 16×64×64 blobs volume, round 1 and nothing else; label TIFFs beside it."""
    raw, gt = blobs_volume((16, 64, 64), seed=3)
    tifffile.imwrite(tmp_path / "v.tif", raw)
    s = init_session(tmp_path / "s")
    catalog.ingest(s, tmp_path / "v.tif", name="v", voxel_size=(8, 8, 8))
    rounds.new_round(s, None)
    s.close()
    tifffile.imwrite(tmp_path / "crop.tif", gt[0:8, 0:32, 0:32] + 1, photometric="minisblack")
    return tmp_path, gt


async def wait_for(pilot, predicate, timeout: float = 30.0, what: str = "the UI") -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await pilot.pause(0.05)


async def open_form(pilot, key: str) -> ActionForm:
    await pilot.press(key)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, ActionForm), what=f"the form of {key!r}")
    form = pilot.app.screen
    await pilot.pause()
    return form


def fill(form: ActionForm, **values) -> None:
    for name, value in values.items():
        form.query_one(f"#field-{name}", Input).value = value


def error(form: ActionForm) -> str:
    found = form.query("#error")  # empty while the form is being taken down
    return str(found.first(Static).content) if found else ""


async def submit(pilot, form: ActionForm, confirm: bool = False) -> None:
    await pilot.press("enter")
    if confirm:
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
    await wait_for(pilot, lambda: not form.is_attached or error(form) not in ("", "checking…", "submitting…",
                                                                          "not done"),
                   what="the form to close or say why not")


def with_session(root, fn):
    s = open_session(root)
    try:
        return fn(s)
    finally:
        s.close()


async def wait_job(pilot, root, job_id: str, state: str = "COMPLETED", timeout: float = 120) -> None:
    def done():
        return with_session(root, lambda s: jobs.get(s, job_id)["state"]) not in jobs.ACTIVE

    await wait_for(pilot, done, timeout, what=f"{job_id} to end")
    assert with_session(root, lambda s: jobs.get(s, job_id))["state"] == state, \
        with_session(root, lambda s: jobs.get(s, job_id))


async def test_a_whole_round_by_keys(tiny):
    """New round, add crop, draw and label held-out, train, predict, evaluate: each from its key and form."""
    tmp, gt = tiny
    root = tmp / "s"
    app = FibApp(root, refresh_s=0.3)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_form(pilot, "N")
        assert form.query_one("#field-target", Input).value == ""  # no classes yet: nothing to prefill
        await submit(pilot, form)
        assert with_session(root, lambda s: rounds.current(s)["n"]) == 2

        form = await open_form(pilot, "a")
        assert form.query_one("#field-round_n", Input).value == "2" and form.query_one("#field-volume", Input).value == "v"
        fill(form, labels_path=str(tmp / "crop.tif"), offset="0,0,0", classes="bg,blob")
        await submit(pilot, form)
        assert not form.is_attached, error(form)

        form = await open_form(pilot, "h")
        fill(form, size="8,16,16", count="1", seed="4")
        await submit(pilot, form, confirm=True)
        region = with_session(root, lambda s: s.db["holdout"].get(1))
        off = tuple(int(v) for v in region["offset"].split(","))
        tifffile.imwrite(tmp / "region.tif", gt[off[0]:off[0] + 8, off[1]:off[1] + 16, off[2]:off[2] + 16] + 1,
                         photometric="minisblack")

        form = await open_form(pilot, "H")
        assert form.query_one("#field-region", Input).value == "1"  # the first unlabelled region
        fill(form, labels_path=str(tmp / "region.tif"))
        await submit(pilot, form, confirm=True)

        form = await open_form(pilot, "t")
        assert form.query_one("#field-iterations", Input).value == str(DEFAULT_ITERATIONS)  # the CLI's
        assert form.query_one("#field-executor", Input).value == "local"
        assert form.query_one("#field-init", Input).value == "auto"
        fill(form, target="blob", **TINY)
        started = time.monotonic()
        await submit(pilot, form)
        assert not form.is_attached, error(form)
        assert time.monotonic() - started < 10  # submitting returns at once; the job runs detached
        await wait_job(pilot, root, "r2-train-1")

        form = await open_form(pilot, "p")
        fill(form, threads="1")
        await submit(pilot, form)
        await wait_job(pilot, root, "r2-predict-1")

        form = await open_form(pilot, "e")
        assert form.query_one("#field-threshold", Input).value == "0.5"
        await submit(pilot, form)
        await wait_job(pilot, root, "r2-evaluate-1")
        screen = app.screen
        assert isinstance(screen, SessionScreen)
        await wait_for(pilot, lambda: screen.snap.evaluation is not None, what="the evaluation on screen")
        assert "IoU 0." in str(screen.query_one("#evaluation", Static).content)

    entries = with_session(root, interventions.entries)
    assert [e["action"] for e in entries] == ["round new", "crop added", "held-out drawn", "held-out labelled",
                                             "job submitted", "job submitted", "job submitted"]
    assert all(e["via"] == "tui" and e["author"] for e in entries)
    train = entries[4]
    assert train["subject_id"] == "r2-train-1" and train["params"]["iterations"] == 12
    assert train["params"]["from"] == "scratch"


BAD_VALUES = [
    ("train", {"iterations": "abc"}, "--iterations 'abc': expected a whole number"),
    ("train", {"lr": "-1"}, "--lr '-1': must be a finite number > 0"),
    ("train", {"patch": "8,32"}, "--patch '8,32': expected three comma-separated numbers Z,Y,X"),
    ("train", {"target": "nucleus"}, "target class 'nucleus' is not one of this session's classes"),
    ("train", {"target": "blob", "init": "7"}, "--from 7: not an earlier round"),
    ("predict", {}, "round 1 has no completed train job"),
    ("evaluate", {"threshold": "2"}, "--threshold '2': must be a finite number > 0 and < 1"),
    ("add_crop", {"labels_path": "/nowhere.tif", "offset": "0,0,0"}, "--labels /nowhere.tif: no such file"),
    ("add_crop", {"offset": "0,0"}, "--offset '0,0': expected three"),
    ("draw_holdout", {"size": "0,16,16"}, "--size '0,16,16': every value must be > 0"),
    ("label_holdout", {"region": "9"}, "region 9"),
    ("resume", {}, "no training can be resumed"),
    ("cancel_job", {"job": "r1-train-9"}, "job 'r1-train-9' not in this session"),
    ("new_round", {"target": "nucleus"}, "target class 'nucleus' is not one of this session's classes"),
]


@pytest.fixture
def labelled(tiny):
    tmp, _ = tiny
    s = open_session(tmp / "s")
    labels.add_crop(s, 1, "v", tmp / "crop.tif", (0, 0, 0), ["bg", "blob"])
    s.close()
    return tmp


@pytest.mark.parametrize("name,values,message", BAD_VALUES, ids=[f"{n}-{'-'.join(v)}" for n, v, _ in BAD_VALUES])
async def test_bad_input_is_one_line_in_the_form_and_changes_nothing(labelled, name, values, message):
    root = labelled / "s"
    before = db_snapshot(root)
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(100, 40)) as pilot:
        form = await open_form(pilot, ACTIONS[name].key)
        fill(form, **values)
        if name == "add_crop" and "labels_path" not in values:
            fill(form, labels_path=str(labelled / "crop.tif"))
        if name == "label_holdout":
            fill(form, labels_path=str(labelled / "crop.tif"))
        await submit(pilot, form)
        assert form.is_attached, "the form must stay open on bad input"
        assert message in error(form) and "\n" not in error(form)
        await pilot.press("escape")
        assert isinstance(app.screen, SessionScreen)
    assert db_snapshot(root) == before


async def test_the_cli_says_the_same(labelled):
    """One validation: the form's line is the CLI's line."""
    from conftest import run_cli

    root = labelled / "s"
    out = run_cli("round", "train", "--session", root, "--iterations", "abc")
    assert out.returncode == 2 and "--iterations 'abc': expected a whole number" in out.stderr


async def test_palette_has_every_round_action_by_verb(labelled):
    app = FibApp(labelled / "s", refresh_s=5)
    async with app.run_test(size=(100, 40)):
        titles = {c.title for c in app.get_system_commands(app.screen)}
    assert {"New round", "Add crop", "Draw held-out regions", "Label held-out region", "Train", "Predict",
            "Evaluate", "Resume training", "Cancel round", "Cancel job"} <= titles
    assert {"Open viewer", "Write message", "Add note", "Show timeline"} <= titles


async def test_read_only_sees_but_never_changes_the_round(labelled):
    root = labelled / "s"
    before = db_snapshot(root)
    app = FibApp(root, refresh_s=5, read_only=True)
    async with app.run_test(size=(100, 40)) as pilot:
        await wait_for(pilot, lambda: app.screen.snap is not None)
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert not titles & {a.title for a in ACTIONS.values()}
        assert "Write message" in titles
        for a in ACTIONS.values():
            await pilot.press(a.key)
            await pilot.pause(0.1)
            assert isinstance(app.screen, SessionScreen), f"{a.title} opened in read-only mode"
        assert "read-only" in app.screen.sub_title
    assert db_snapshot(root) == before


async def test_escape_leaves_a_form_without_change(labelled):
    root = labelled / "s"
    before = db_snapshot(root)
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(80, 24)) as pilot:
        for name in ("train", "cancel_round", "draw_holdout"):
            await open_form(pilot, ACTIONS[name].key)
            await pilot.press("escape")
            assert isinstance(app.screen, SessionScreen)
    assert db_snapshot(root) == before


async def test_cancel_then_resume_in_the_tui(labelled):
    """A cancelled training shows where it can resume; Resume training continues it as a new attempt."""
    root = labelled / "s"
    app = FibApp(root, refresh_s=0.3)
    async with app.run_test(size=(120, 40)) as pilot:
        form = await open_form(pilot, "t")
        fill(form, target="blob", **{**TINY, "iterations": "400"})
        await submit(pilot, form)
        s = open_session(root)
        spec = jobs.spec(s, jobs.get(s, "r1-train-1"))
        s.close()
        assert spec["checkpoint_every"] == 100
        await wait_for(pilot, lambda: with_session(root, lambda s: s.db.execute(
            "select count(*) from checkpoints where job = 'r1-train-1'").fetchone()[0]) > 0, 120, "a checkpoint")
        table = app.screen.query_one("#jobs", DataTable)
        await wait_for(pilot, lambda: table.row_count == 1)
        table.focus()
        form = await open_form(pilot, "c")
        assert form.query_one("#field-job", Input).value == "r1-train-1"  # the selected job
        await submit(pilot, form, confirm=True)
        await wait_for(pilot, lambda: (app.screen.job("r1-train-1") or {}).get("resumable") is not None, 60,
                       "resumable")
        await wait_for(pilot, lambda: "resumable from iteration" in str(table.get_row("r1-train-1")[3]))
        form = await open_form(pilot, "u")
        assert form.query_one("#field-job", Input).value == "r1-train-1"
        fill(form, iterations="420")
        await submit(pilot, form)
        assert not form.is_attached, error(form)
        await wait_job(pilot, root, "r1-train-2", timeout=300)
        await wait_for(pilot, lambda: "r1-train-1 → r1-train-2" in app.screen.snap.curve_title or
                       app.screen.selected_job != "r1-train-2", 10)
    s = open_session(root)
    try:
        assert jobs.get(s, "r1-train-2")["resumes"] == "r1-train-1"
        assert jobs.lineage(s, "r1-train-2") == ["r1-train-1", "r1-train-2"]
        steps = [m["step"] for m in jobs.metrics(s, "r1-train-2", "loss")]
        assert steps and steps[0] > 100 and steps[-1] == 420  # the curve continues where the checkpoint was
        acts = [e["action"] for e in interventions.entries(s)]
        assert acts == ["job submitted", "job cancelled", "training resumed"]
    finally:
        s.close()


async def test_small_terminal_cycles_panels_wide_shows_all(labelled):
    app = FibApp(labelled / "s", refresh_s=5)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.snap is not None)
        shown = [p for p in ("log", "thread", "interventions", "loss", "scores") if screen.query_one(f"#{p}").display]
        assert shown == ["log"] and not screen.query_one("#preview").display
        await pilot.press("b")
        assert screen.query_one("#thread").display and not screen.query_one("#log").display
        await pilot.press("B", "B")
        assert screen.query_one("#scores").display
    app = FibApp(labelled / "s", refresh_s=5)
    async with app.run_test(size=(200, 60)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.snap is not None)
        assert all(screen.query_one(f"#{p}").display for p in ("log", "thread", "interventions", "loss", "scores",
                                                               "preview"))
        assert screen.query_one("#preview").size.width > 40


async def test_reason_attached_to_an_automatic_entry(labelled):
    root = labelled / "s"
    s = open_session(root)
    entry = interventions.record(s, "round new", subject="round", subject_id=2, via="cli")
    s.close()
    app = FibApp(root, refresh_s=5)
    async with app.run_test(size=(200, 60)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: screen.snap is not None and screen.query_one("#interventions",
                                                                                    OptionList).option_count)
        screen.query_one("#interventions", OptionList).focus()
        await pilot.press("w")
        await pilot.press(*"false negatives on the dark side", "enter")
        await wait_for(pilot, lambda: with_session(root, lambda s: s.db["interventions"].get(entry["id"])["reason"]))
    assert with_session(root, lambda s: s.db["interventions"].get(entry["id"])["reason"]) == \
        "false negatives on the dark side"


def test_actions_import_without_textual():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, fibtui.actions, fibtui.cli; "
                          "print('textual' in sys.modules)"], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


async def test_executor_choices_come_from_the_config_with_their_reachability(labelled, monkeypatch):
    (labelled / "fibtui.toml").write_text('[profiles.gpu]\npartition = "gpu"\n\n'
                                          '[profiles.box]\nssh_host = "no-such-host-fibtui"\n')
    monkeypatch.chdir(labelled)
    app = FibApp(labelled / "s", refresh_s=5)
    async with app.run_test(size=(120, 50)) as pilot:
        form = await open_form(pilot, "t")
        hint = form.query_one("#hint-executor", Static)
        assert "local, slurm, slurm:gpu, ssh:box" in str(hint.content)
        await wait_for(pilot, lambda: "local: ✓ this machine" in str(hint.content), 60, "doctor's checks")
        fill(form, executor="ssh:box")
        await wait_for(pilot, lambda: "ssh:box: ✗" in str(hint.content), 10, "the ssh profile's check")
