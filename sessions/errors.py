"""The one error type every layer raises for bad user input.

The CLI prints `str(err)` as a single line and exits non-zero; no traceback
unless `--debug`. The message names the input and says what to do.
"""


class FibError(Exception):
    """A user-facing error: one line, names the input, says how to fix it."""

    exit_code = 2
