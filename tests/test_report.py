"""`fibtui report`: the HTML page and its PNGs, checked in a real headless Chromium (Debian's `chromium`).

The browser check: the page renders, every image loads (the page's own script counts them into
`data-images` on <body>), and the page fetched nothing over the network (Chromium's net log: no
http(s) request made for the file:// page). Without chromium the browser tests skip outside CI
and fail with CI=true (tests/infra/up.sh installs it as root; see also `chromium_bin`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from conftest import run_cli
from infra.fixtures import in_ci
from recorded import make_recorded


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return make_recorded(tmp_path_factory.mktemp("report"))


def chromium_bin() -> str:
    """Debian's chromium; in CI as root it is installed when missing (as tests/infra/up.sh would)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found and in_ci() and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
                       capture_output=True, timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
        found = shutil.which("chromium")
    if not found:
        reason = ("Debian's chromium is not installed: `apt-get install -y --no-install-recommends chromium` "
                  "(tests/infra/up.sh installs it as root)")
        if in_ci():
            pytest.fail(f"CI=true but {reason}", pytrace=False)
        pytest.skip(reason)
    return found


def browse(index: Path, tmp: Path) -> tuple[str, list[str]]:
    """(DOM after load, URLs of http(s) requests the page made) from headless Chromium."""
    netlog = tmp / "net.json"
    proc = subprocess.run(
        [chromium_bin(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--no-first-run", "--disable-background-networking", f"--user-data-dir={tmp / 'profile'}",
         "--virtual-time-budget=5000", f"--log-net-log={netlog}", "--dump-dom", index.resolve().as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = json.loads(netlog.read_text())
    start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    fetched = [e["params"]["url"] for e in log["events"]
               if e["type"] == start and e.get("params", {}).get("url", "").startswith(("http:", "https:"))
               and "file://" in str(e["params"].get("network_isolation_key", ""))]  # the page's, not the browser's
    return proc.stdout, fetched


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def test_report_has_every_section_and_its_images(recorded, tmp_path):
    out = tmp_path / "rep"
    res = json.loads(run_cli("report", "--session", recorded, "--out", out, "--json", check=True).stdout)
    html = (out / "index.html").read_text()
    for text in ("The question and the current answer", "How many blobs are there", "not measured yet",
                 "Round 1", "r1-train-1", "GPU-hours", "wall time", "False positives red", "Messages and interventions",
                 "labelled one corner crop", "Provenance", "blake3-voxels:", "training spec", "checkpoint",
                 "sha256:", "IoU", "object F1"):
        assert text in html, text
    p = Images()
    p.feed(html)
    assert sorted(p.srcs) == sorted(res["images"]) and len(p.srcs) >= 5  # timeline, scores, loss, 2 regions
    for src in p.srcs:
        assert (out / src).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert not (tmp_path / "rep.partial").exists()


def test_report_renders_in_headless_chromium_offline(recorded, tmp_path):
    out = tmp_path / "rep"
    run_cli("report", "--session", recorded, "--out", out, check=True)
    n = len(list(out.glob("*.png")))
    dom, fetched = browse(out / "index.html", tmp_path)
    assert f'data-images="{n}/{n}"' in dom, re.findall(r'data-images="[^"]*"', dom)
    assert "Round 1" in dom
    assert fetched == []


def test_browser_check_catches_a_missing_image_and_a_network_fetch(recorded, tmp_path):
    out = tmp_path / "rep"
    run_cli("report", "--session", recorded, "--out", out, check=True)
    (out / "scores.png").unlink()
    html = (out / "index.html").read_text()
    html = re.sub(r"<meta http-equiv='Content-Security-Policy'[^>]*>", "", html)  # let the fetch be tried
    (out / "index.html").write_text(html.replace("<h1>", "<img src='http://example.invalid/x.png'><h1>", 1))
    dom, fetched = browse(out / "index.html", tmp_path)
    n = html.count("<img") + 1  # the report's images and the foreign one
    assert f'data-images="{n - 2}/{n}"' in dom, re.findall(r'data-images="[^"]*"', dom)
    assert "images did not load" in dom
    assert fetched and fetched[0].startswith("http://example.invalid/")


def test_report_of_an_empty_session_and_bad_out(tmp_path):
    run_cli("init", tmp_path / "e", check=True)
    out = tmp_path / "r"
    run_cli("report", "--session", tmp_path / "e", "--out", out, check=True)
    html = (out / "index.html").read_text()
    assert "No round has been evaluated yet" in html and "No messages or interventions yet" in html
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    proc = run_cli("report", "--session", tmp_path / "e", "--out", tmp_path / "other")
    assert proc.returncode == 2 and "not a fibtui report" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert (tmp_path / "other" / "x.txt").read_text() == "mine"


def test_answer_shows_the_pore_measurement_when_there_is_one(recorded, tmp_path):
    """A completed measure job (its result's readout, as remote/objects/job.py writes it) becomes the answer."""
    pytest.importorskip("sessions.measure")
    import shutil

    from sessions.jobfiles import atomic_write_json
    from sessions.workspace import open_session

    s_dir = tmp_path / "s"
    shutil.copytree(recorded, s_dir)
    s = open_session(s_dir)
    readout = {"nuclei": [{"nucleus": 1, "pores": 212, "envelope_um2": 31.4, "density_per_um2": 6.75,
                           "ci95": [6.1, 7.5], "partial": False, "patches": 30, "warnings": []}],
               "pores": 212, "envelope_um2": 31.4, "density_per_um2": 6.75, "unassigned_pores": 0}
    d = s_dir / "jobs" / "r1-measure-1"
    d.mkdir()
    atomic_write_json(d / "spec.json", {"kind": "measure", "job_id": "r1-measure-1"})
    atomic_write_json(d / "result.json", {"status": "completed", "readout": readout})
    s.db["jobs"].insert({"id": "r1-measure-1", "round": 1, "kind": "measure", "executor": "local",
                         "state": "COMPLETED", "dir": "jobs/r1-measure-1", "submitted": "2026-12-01T23:00:00+00:00",
                         "ended": "2026-12-01T23:00:05+00:00"}, alter=True)
    s.close()
    run_cli("report", "--session", s_dir, "--out", tmp_path / "rep", check=True)
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "212 pores on 31.40 µm² of nuclear envelope" in html and "6.75 per µm²" in html
    assert "nucleus 1: 212 pores" in html and "not measured yet" not in html


def test_score_plot_has_object_f1_per_target(tmp_path, monkeypatch):
    """The report's score figure: object F1 is a series of its own beside IoU and F1, one line per target class."""
    from fibtui.report import plots

    figs = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figs.append(fig) or (1, 1))
    rows = [{"round": 1, "iou": 0.5, "f1": 0.6, "object_f1": 0.4, "target": "envelope"},
            {"round": 2, "iou": 0.6, "f1": 0.7, "object_f1": 0.55, "target": "envelope"},
            {"round": 3, "iou": 0.3, "f1": 0.4, "object_f1": 0.7, "target": "pore"},
            {"round": 4, "iou": None, "f1": None, "object_f1": 0.8, "target": "pore"}]
    assert plots.scores(rows, tmp_path / "s.png") == (1, 1)
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in figs[0].axes[0].get_lines()}
    assert lines["object F1 · envelope"] == ([1, 2], [0.4, 0.55])
    assert lines["object F1 · pore"] == ([3, 4], [0.7, 0.8])
    assert lines["IoU · pore"] == ([3], [0.3]) and "precision · pore" not in lines
    plots.scores([{**r, "target": "pore"} for r in rows[2:]], tmp_path / "one.png")
    assert {ln.get_label() for ln in figs[1].axes[0].get_lines()} == {"IoU", "F1", "object F1"}
    for fig in figs:
        plots._plt().close(fig)
