"""What every command group shares: the --session and --json options, opening a session, printing status."""

from __future__ import annotations

from pathlib import Path

import click

from fibtui.output import console, table

SESSION_HELP = "Session directory (or set FIBTUI_SESSION)."


def session_option(f):
    return click.option("--session", "session_dir", envvar="FIBTUI_SESSION", required=True,
                        type=click.Path(path_type=Path), help=SESSION_HELP)(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)


def open_dir(session_dir: Path):
    """Open a session, or fail with one line saying how to make one."""
    from sessions.workspace import open_session

    return open_session(session_dir)


def class_list(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",")] if text else None


def print_status(s) -> None:
    from sessions.summary import summarize

    summ = summarize(s)
    console.print(f"session [bold]{summ['session']}[/]")
    for v in summ["volumes"]:
        console.print(f"  volume {v['name']} {v['shape']} @ {v['voxel_size']} nm ({v['levels']} levels)")
    for r in summ["rounds"]:
        m = r["metrics"]
        score = (f"IoU {m['iou']:.3f}  F1 {m['f1']:.3f}  P {m['precision']:.3f}  R {m['recall']:.3f}"
                 if m else "not evaluated")
        console.print(f"[bold]round {r['n']}[/] target {r['target']}  crops {r['crops']}  {score}")
        console.print(table(None, ["job", "state", "progress", "message / reason"],
                            [[j["id"], j["state"], f"{100 * (j['progress'] or 0):.0f}%",
                              j["reason"] or j["message"] or ""] for j in r["jobs"]]))


def open_tui(session_dir: Path, mouse: bool) -> None:
    open_dir(session_dir).close()  # validate first: one clear line, not a crashed app
    from fibtui.tui.app import run_tui

    run_tui(Path(session_dir), mouse=mouse)
