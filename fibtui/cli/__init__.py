"""The `fibtui` command line: every TUI action as a scriptable subcommand.

User errors (`FibError`) print one line and exit 2; `--debug` shows the traceback.
Commands live in one module per group (data, rounds, journal, tools); each
registers itself on `cli` when imported below.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from fibtui import __version__
from fibtui.cli.common import open_tui
from fibtui.output import err_console
from sessions.errors import FibError


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.option("--session", "session_dir", envvar="FIBTUI_SESSION", type=click.Path(path_type=Path),
              help="Open the TUI on this session (when no command is given).")
@click.version_option(__version__, prog_name="fibtui")
@click.pass_context
def cli(ctx: click.Context, debug: bool, session_dir: Path | None) -> None:
    """fibtui: curate FIB-SEM volumes from the terminal.

    Run without a command to open the TUI on --session (or the current
    directory, if it is a session).
    """
    if ctx.invoked_subcommand is None:
        open_tui(session_dir or Path.cwd(), mouse=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args=argv, prog_name="fibtui", standalone_mode=False)
    except FibError as e:
        if "--debug" in argv:
            raise
        err_console.print(f"[red]fibtui: error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except SystemExit as e:
        return int(e.code or 0)
    return 0


from fibtui.cli import annotate, data, journal, measure, model, record, rounds, tools  # noqa: E402,F401  (registers the commands)

if __name__ == "__main__":
    sys.exit(main())
