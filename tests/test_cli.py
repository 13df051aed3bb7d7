"""The CLI as a user meets it: help everywhere, one-line errors, the session left as it was."""

import json
import re

import numpy as np
import pytest
import tifffile

from conftest import ROOT, db_snapshot, run_cli


def all_commands():
    from fibtui.cli import cli

    out = []

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            out.append(f"{prefix} {name}".strip())
            walk(sub, f"{prefix} {name}")

    walk(cli, "")
    return out


@pytest.fixture(scope="module")
def cli_session(tmp_path_factory):
    """A session with one volume and one round, shared by the bad-input tests."""
    tmp = tmp_path_factory.mktemp("cli")
    raw = np.random.default_rng(0).integers(0, 255, (16, 64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp / "vol.tif", raw)
    s = tmp / "s"
    run_cli("init", s, check=True)
    run_cli("ingest", tmp / "vol.tif", "--session", s, "--voxel-size", "8,8,8", check=True)
    run_cli("round", "new", "--session", s, check=True)
    run_cli("holdout", "draw", "--session", s, "--count", "1", "--size", "4,16,16", "--seed", "1", check=True)
    return tmp, s


@pytest.mark.parametrize("cmd", all_commands())
def test_every_command_has_help_and_is_documented(cmd):
    proc = run_cli(*cmd.split(), "--help")
    assert proc.returncode == 0 and "Usage:" in proc.stdout
    readme = (ROOT / "README.md").read_text()
    assert f"fibtui {cmd}" in readme, f"`fibtui {cmd}` is not documented in README.md"


def _bad_inputs(tmp, s):
    lab = tmp / "lab.tif"
    tifffile.imwrite(lab, np.ones((4, 16, 16), np.uint8), photometric="minisblack")
    wrong = tmp / "wrong.tif"
    tifffile.imwrite(wrong, np.ones((4, 16, 17), np.uint8), photometric="minisblack")
    (tmp / "notatiff.tif").write_bytes(b"GIF89a not a tiff at all")
    (tmp / "notasession").mkdir(exist_ok=True)
    return {
        "missing path": (["ingest", tmp / "nope.tif", "--session", s, "--voxel-size", "8,8,8"], "no such file"),
        "not a TIFF": (["ingest", tmp / "notatiff.tif", "--session", s, "--voxel-size", "8,8,8"], "not a readable TIFF"),
        "missing voxel size": (["ingest", tmp / "vol.tif", "--session", s, "--name", "v2"], "--voxel-size"),
        "bad voxel size": (["ingest", tmp / "vol.tif", "--session", s, "--voxel-size", "8,0,8"], "must be > 0"),
        "crop outside volume": (["crop", "add", "--session", s, "--labels", lab, "--offset", "14,0,0",
                                 "--classes", "bg,fg"], "outside volume"),
        "label shape mismatch": (["holdout", "label", "--session", s, "--region", "1", "--labels", wrong,
                                  "--classes", "bg,fg"], "shape 4,16,17"),
        "not a session": (["status", "--session", tmp / "notasession"], "not a fibtui session"),
        "no such session": (["status", "--session", tmp / "nowhere"], "no such session"),
        "predict before train": (["round", "predict", "--session", s], "no completed train job"),
    }


@pytest.mark.parametrize("case", ["missing path", "not a TIFF", "missing voxel size", "bad voxel size",
                                  "crop outside volume", "label shape mismatch", "not a session",
                                  "no such session", "predict before train"])
def test_bad_input_one_line_nonzero_nothing_changed(cli_session, case):
    tmp, s = cli_session
    args, expect = _bad_inputs(tmp, s)[case]
    before = db_snapshot(s)
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert expect in lines[0], lines[0]
    assert db_snapshot(s) == before


def test_debug_shows_traceback(cli_session):
    tmp, s = cli_session
    proc = run_cli("--debug", "status", "--session", tmp / "nowhere")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_init_refuses_existing_session(cli_session):
    _, s = cli_session
    proc = run_cli("init", s)
    assert proc.returncode == 2 and "already a fibtui session" in proc.stderr


def test_messages_and_notes_round_trip(tmp_path):
    s = tmp_path / "s"
    run_cli("init", s, check=True)
    run_cli("msg", "add", "--session", s, "--author", "scientist", "Backlight shading? it's `$(rm -rf)` \"quoted\"",
            check=True)
    run_cli("note", "add", "--session", s, "relabelled crop 3", "--why", "membrane was marked as mito", check=True)
    msgs = json.loads(run_cli("msg", "list", "--session", s, "--json", check=True).stdout)
    notes = json.loads(run_cli("note", "list", "--session", s, "--json", check=True).stdout)
    assert msgs[0]["author"] == "scientist" and msgs[0]["text"].startswith("Backlight shading? it's `$(rm -rf)`")
    assert notes[0]["action"] == "relabelled crop 3" and notes[0]["reason"] == "membrane was marked as mito"
    bad = run_cli("msg", "add", "--session", s, "hi", "--round", "7")
    assert bad.returncode == 2 and "no such round" in bad.stderr


def test_version():
    proc = run_cli("--version")
    assert proc.returncode == 0 and re.search(r"\d+\.\d+\.\d+", proc.stdout)


def test_target_named_before_classes_is_checked_at_training(tmp_path):
    raw = np.zeros((8, 32, 32), np.uint8)
    tifffile.imwrite(tmp_path / "v.tif", raw)
    tifffile.imwrite(tmp_path / "c.tif", np.ones((4, 16, 16), np.uint8), photometric="minisblack")
    s = tmp_path / "s"
    run_cli("init", s, check=True)
    run_cli("ingest", tmp_path / "v.tif", "--session", s, "--voxel-size", "8,8,8", check=True)
    run_cli("round", "new", "--session", s, "--target", "mito", check=True)  # no classes yet: allowed
    run_cli("crop", "add", "--session", s, "--labels", tmp_path / "c.tif", "--offset", "0,0,0",
            "--classes", "background,membrane", check=True)
    before = db_snapshot(s)
    proc = run_cli("round", "train", "--session", s, "--iterations", "1")
    assert proc.returncode == 2 and "'mito' is not one of this session's classes" in proc.stderr
    assert db_snapshot(s) == before
