"""The viewer's background work: autosave, commit, the prediction's objects, preview (in process, or as a
job polled until it ends), suggestions.

Each runs in an exclusive thread worker (never blocking the keys) and hands
its result back as a message (fibtui/tui/messages.py); a mixin of ViewerScreen.
"""

from __future__ import annotations

import time
from datetime import datetime

import numpy as np
from textual import work

from fibtui.actions import ACTIONS, Context, invoke, parse
from fibtui.actions.rounds import preview_job_spec
from fibtui.tui.messages import ObjectsReady, ViewerDone
from remote.predict_array import OUTPUT
from sessions import annotations, jobs
from sessions.errors import FibError
from sessions.geometry import fmt_range
from sessions.volumes import omezarr
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
            out = preview(ref.path, self.source.raw.levels[0], box, volume_path=self.source.raw.path)
            self.post_message(ViewerDone(f"preview: {ref.label} at {time.strftime('%H:%M:%S')}, "
                                         f"{out['seconds']:.1f} s on {out['threads']} threads", kind="preview",
                                         payload={"box": box, "prob": out["prob"], "label": ref.label}))
        except FibError as e:
            self.post_message(ViewerDone(f"Preview: {e}", error=True, kind="preview"))
        except Exception as e:  # noqa: BLE001 - a broken model file must not take the app down
            self.post_message(ViewerDone(f"Preview: {type(e).__name__}: {e}", error=True, kind="preview"))

    # -- a preview job: check, submit, poll (SQLite open only inside each worker) -------------------
    def preview_job_raw(self, box, model: str | None) -> dict:
        return {"round_n": self.round_n, "region": fmt_range(box), "model": model, "volume": self.source.name}

    @work(thread=True, exclusive=True, group="preview-job")
    def preview_job_check(self, box, model: str | None) -> None:
        """The action's own checks (round, region, model), nothing written: a refusal comes before the question."""
        raw = self.preview_job_raw(box, model)
        session = open_session(self.root)
        try:
            values = parse(session, ACTIONS["preview_job"], raw)
            _, spec = preview_job_spec(session, values)
            self.post_message(ViewerDone("", kind="preview_ask", payload={
                "raw": raw, "box": box, "label": spec["model_label"], "executor": values["executor"]}))
        except FibError as e:
            self.post_message(ViewerDone(f"Preview job: {e}", error=True, kind="preview_job"))
        finally:
            session.close()

    @work(thread=True, exclusive=True, group="preview-job")
    def submit_preview_job(self, raw: dict, box) -> None:
        session = open_session(self.root)
        try:
            job = invoke(session, "preview_job", raw, Context(via="tui", executors=self.executors))
            self.post_message(ViewerDone(f"{job['summary']}; its overlay shows when it ends", kind="preview_job",
                                         payload={"id": job["id"], "box": box, "label": job["model"]}))
        except FibError as e:
            self.post_message(ViewerDone(f"Preview job: {e}", error=True, kind="preview_job"))
        finally:
            session.close()

    def poll_preview_job(self) -> None:
        """Timer tick: one poll in a worker, unless the last one is still asking (a slow scheduler)."""
        if self.preview_job is None or (self.preview_poll is not None and self.preview_poll.is_running):
            return
        self.preview_poll = self.preview_poll_worker(dict(self.preview_job))

    @work(thread=True, group="preview-poll")
    def preview_poll_worker(self, pending: dict) -> None:
        """Refresh the session's jobs; when the preview job has ended, read its region (level 0) for the overlay."""
        from remote.dispatch import Dispatcher

        job_id, box = pending["id"], pending["box"]
        try:
            session = open_session(self.root)
            try:
                Dispatcher(session, executors=self.executors).refresh()
                job = jobs.get(session, job_id)
                out = jobs.job_dir(session, job) / (jobs.result(session, job) or {}).get("output", OUTPUT)
            finally:
                session.close()
            if job["state"] in jobs.ACTIVE:
                return self.post_message(ViewerDone(
                    f"preview job {job_id}: {job['state'].lower()} {100 * (job['progress'] or 0):.0f}%",
                    kind="preview_state", payload={"id": job_id}))
            if job["state"] != "COMPLETED":
                return self.post_message(ViewerDone(
                    f"Preview job {job_id} {job['state']}: {job['reason'] or 'see its stderr.log'}", error=True,
                    kind="preview", payload={"job": job_id}))
            prob = np.asarray(omezarr.open_multiscale(out).levels[0][box.slices])
        except Exception as e:  # noqa: BLE001 - an unreadable session or output must not take the app down
            why = str(e) if isinstance(e, FibError) else f"{type(e).__name__}: {e}"
            return self.post_message(ViewerDone(f"preview job {job_id}: cannot read it ({why}); trying again",
                                                error=True, kind="preview_state", payload={"id": job_id}))
        when = datetime.fromisoformat(job["ended"]).astimezone().strftime("%H:%M:%S") if job["ended"] else "?"
        self.post_message(ViewerDone(f"preview: {pending['label']} at {when}, job {job_id}", kind="preview",
                                     payload={"box": box, "prob": prob, "label": pending["label"], "job": job_id}))

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
        if message.kind == "preview_ask":
            return self.ask_preview_job(message.payload)
        if message.kind == "preview_job" and not message.error:
            self.follow_preview_job(message.payload)
        if message.kind == "preview_state":
            pending = self.preview_job
            if pending is None or pending["id"] != message.payload["id"] or pending["shown"] == message.text:
                return           # an answer to a job no longer watched, or nothing new: leave the line alone
            pending["shown"] = message.text
        if message.kind == "preview":
            payload = dict(message.payload or {})
            job_id = payload.pop("job", None)
            if job_id is not None and (self.preview_job or {}).get("id") == job_id:
                self.end_preview_job()
            if not message.error:
                self.preview = {**payload, "note": message.text}
        if message.kind == "commit" and not message.error:
            self.ann, self.objects, self.object_i, self.pen = None, None, -1, False
            self.open_source(reopen=True)   # the new crop shows as labels
        self.say(message.text, message.error)
        self.compose_frame()
