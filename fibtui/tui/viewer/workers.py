"""The viewer's background work: autosave, commit, the prediction's objects, preview, suggestions.

Each runs in an exclusive thread worker (never blocking the keys) and hands
its result back as a message (fibtui/tui/messages.py); a mixin of ViewerScreen.
"""

from __future__ import annotations

import time

import numpy as np
from textual import work

from fibtui.actions import Context, invoke
from fibtui.tui.messages import ObjectsReady, ViewerDone
from sessions import annotations
from sessions.errors import FibError
from sessions.workspace import open_session


class ViewerWorkers:
    @work(thread=True, exclusive=True, group="autosave")
    def autosave(self, snap: dict) -> None:
        try:
            annotations.write_autosave(self.root, snap)
        except OSError as e:
            self.post_message(ViewerDone(f"autosave failed: {e}", error=True, kind="autosave"))

    @work(thread=True, exclusive=True, group="commit")
    def commit_worker(self, snap: dict) -> None:
        session = open_session(self.root)
        try:
            annotations.write_autosave(self.root, snap)
            result = invoke(session, "commit_crop", {"round_n": None}, Context(via="tui"))
            self.post_message(ViewerDone(result["summary"], kind="commit"))
        except FibError as e:
            self.post_message(ViewerDone(f"Commit crop: {e}", error=True, kind="commit"))
        finally:
            session.close()

    @work(thread=True, exclusive=True, group="objects")
    def objects_worker(self, box, by: str) -> None:
        try:
            prob = np.asarray(self.source.prediction.levels[0][box.slices])
            lab, objs = annotations.components(prob)
            self.post_message(ObjectsReady(annotations.order(objs, by), lab, box.offset))
        except Exception as e:  # noqa: BLE001 - an unreadable prediction must not take the app down
            self.post_message(ObjectsReady([], None, box.offset, f"cannot read the prediction: {e}"))

    @work(thread=True, exclusive=True, group="preview")
    def preview_worker(self, box, model: str | None) -> None:
        from remote.preview import find_model, preview

        try:
            session = open_session(self.root)
            try:
                ref = find_model(session, model, self.round_n)
            finally:
                session.close()    # no SQLite held while the model runs
            out = preview(ref.path, self.source.raw.levels[0], box)
            self.post_message(ViewerDone(f"preview: {ref.label} at {time.strftime('%H:%M:%S')}, "
                                         f"{out['seconds']:.1f} s on {out['threads']} threads", kind="preview",
                                         payload={"box": box, "prob": out["prob"], "label": ref.label}))
        except FibError as e:
            self.post_message(ViewerDone(f"Preview: {e}", error=True, kind="preview"))
        except Exception as e:  # noqa: BLE001 - a broken model file must not take the app down
            self.post_message(ViewerDone(f"Preview: {type(e).__name__}: {e}", error=True, kind="preview"))

    @work(thread=True, exclusive=True, group="suggest")
    def suggest_worker(self, method: str) -> None:
        from sessions.suggest import suggest

        session = open_session(self.root)
        try:
            rows = suggest(session, self.source.name, method=method, count=8)
            self.post_message(ViewerDone(f"{len(rows)} suggestions ({method})", kind="suggest",
                                         payload={"rows": rows, "method": method}))
        except FibError as e:
            self.post_message(ViewerDone(f"Where to label next: {e}", error=True, kind="suggest"))
        finally:
            session.close()

    def on_viewer_done(self, message: ViewerDone) -> None:
        if message.kind == "suggest" and not message.error:
            self.say(message.text)
            return self.on_suggestions(message.payload["rows"], message.payload["method"])
        if message.kind == "preview" and not message.error:
            self.preview = {**message.payload, "note": message.text}
        if message.kind == "commit" and not message.error:
            self.ann, self.objects, self.object_i, self.pen = None, None, -1, False
            self.open_source(reopen=True)   # the new crop shows as labels
        self.say(message.text, message.error)
        self.compose_frame()
