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


def open_tui(session_dir: Path, mouse: bool, read_only: bool = False, config: Path | None = None) -> None:
    """Validate first (one clear line, not a crashed app); the config's `role = "scientist"` means read-only."""
    from remote.profiles import config_role

    open_dir(session_dir).close()
    read_only = read_only or config_role(str(config) if config else None) == "scientist"
    from fibtui.tui.app import run_tui

    run_tui(Path(session_dir), mouse=mouse, read_only=read_only)


def action_options(name: str, skip: tuple[str, ...] = ()):
    """Click options made from an action's parameters: same flags, help and defaults as the TUI's form.

    Values reach the command as text (None when not given) and are parsed by the action itself, so a
    bad value is the same one-line error here and in the TUI."""
    from fibtui.actions import ACTIONS

    def deco(f):
        for p in reversed(ACTIONS[name].params):
            if p.name in skip:
                continue
            default = "" if callable(p.default) or p.default is None or p.switch else f"  [default: {p.default}]"
            text = (p.help[:1].upper() + p.help[1:] + "." if p.help else p.label) + default
            if p.switch:  # a bare flag: "yes" when given, else None (the action's default)
                f = click.option(p.flag, p.name, is_flag=True, flag_value="yes", default=None, help=text)(f)
            else:
                f = click.option(p.flag, p.name, default=None, metavar=p.label.upper().replace(" ", "_"),
                                 help=text)(f)
        return f
    return deco


def run_action(session, name: str, raw: dict) -> dict:
    """Invoke an action from the command line (the intervention log says it came from the CLI)."""
    from fibtui.actions import Context, invoke

    return invoke(session, name, raw, Context(via="cli"))
