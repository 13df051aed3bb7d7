"""Typed messages that worker threads post back to the UI thread.

Workers never touch widgets; they hand over plain data in one of these and
the screen applies it on the UI thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message
from textual.strip import Strip

from fibtui.tui.screens.action_form import FormData
from fibtui.tui.snapshot import Snapshot
from sessions.volumes.slices import SliceSource


@dataclass
class SnapshotReady(Message):
    """A refresh finished: everything the session screen shows."""

    snapshot: Snapshot


@dataclass
class RefreshFailed(Message):
    """A refresh could not read the session; what is shown is from the last good one."""

    error: str


@dataclass
class LogTail(Message):
    """The stderr tail of the job the curator selected."""

    job_id: str
    text: str


@dataclass
class ActionDone(Message):
    """A mutating action (message, note, cancel) finished; `error` when it failed."""

    text: str
    error: bool = False


@dataclass
class FormReady(Message):
    """An action's form data (prefill, choices) was read from the session: open the form."""

    data: FormData


@dataclass
class SourceReady(Message):
    """The viewer's volume is open; `source` is None when the session has no volume."""

    source: SliceSource | None
    classes: list[str]
    error: str | None = None


@dataclass
class FrameReady(Message):
    """A rendered frame: one Strip per terminal row; `error` when the slice could not be read."""

    strips: list[Strip]
    error: str | None = None


@dataclass
class BaseFrameReady(Message):
    """The viewer's image of `view` before the curator's overlays (RGB, 2·rows × cols)."""

    rgb: object          # np.ndarray
    view: object         # fibtui.tui.viewer.frame.View
    error: str | None = None


@dataclass
class PendingWork(Message):
    """What the viewer needs besides the volume: an autosaved annotation to offer back, the round."""

    annotation: object   # sessions.annotations.Annotation | None
    round_n: int | None
    target: str | None
    heldout: list        # [(id, Box)]
    crops: list          # [(id, Box)]
    reopened: bool = False


@dataclass
class ObjectsReady(Message):
    """Connected components of the prediction in the proofreading region."""

    objects: list
    labels: object       # np.ndarray of object ids, or None
    offset: tuple
    error: str | None = None


@dataclass
class ViewerDone(Message):
    """A viewer job (commit, preview) finished; `error` when it was refused."""

    text: str
    error: bool = False
    kind: str = ""
    payload: object = None
