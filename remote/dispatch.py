"""Submitting round jobs and keeping the session in step with them.

`refresh` is what the CLI and the TUI call on a timer: one batched status
query per executor, then events → SQLite. It is safe to call from a fresh
process at any time, which is how a restarted TUI re-attaches to jobs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

from remote.executors import Executor, get_executor
from sessions import jobs
from sessions.errors import FibError
from sessions.workspace import Session


class Dispatcher:
    def __init__(self, session: Session):
        self.session = session
        self._executors: dict[str, Executor] = {}

    def executor(self, name: str) -> Executor:
        if name not in self._executors:
            self._executors[name] = get_executor(name)
        return self._executors[name]

    def submit(self, round_n: int, kind: str, spec: dict, executor: str = "local") -> dict:
        ex = self.executor(executor)
        job = jobs.create(self.session, round_n, kind, spec, ex.name)
        try:
            ext = ex.submit(jobs.job_dir(self.session, job))
        except Exception as e:
            jobs.finish(self.session, job, "FAILED", f"submission failed: {e}")
            raise FibError(f"job {job['id']}: could not be submitted to {ex.name} ({e})") from None
        self.session.db["jobs"].update(job["id"], {"external_id": ext})
        return {**job, "external_id": ext}

    def refresh(self) -> list[dict]:
        """Ingest events of every active job and settle the finished ones; return them updated."""
        active = jobs.active(self.session)
        by_ex: dict[str, list[dict]] = defaultdict(list)
        for job in active:
            by_ex[job["executor"]].append(job)
        updated = []
        for name, group in by_ex.items():
            states = self.executor(name).status(
                [(j["external_id"], jobs.job_dir(self.session, j)) for j in group if j["external_id"]])
            for job in group:
                job = jobs.ingest(self.session, job)
                st = states.get(job["external_id"])
                if st and st.state not in jobs.ACTIVE:
                    job = jobs.ingest(self.session, job)  # events written just before exit
                    job = jobs.finish(self.session, job, st.state, st.reason)
                elif st and st.state == "RUNNING" and job["state"] == "PENDING":
                    self.session.db["jobs"].update(job["id"], {"state": "RUNNING"})
                    job = {**job, "state": "RUNNING"}
                updated.append(job)
        return updated

    def cancel(self, job_id: str) -> dict:
        job = jobs.get(self.session, job_id)
        if job["state"] not in jobs.ACTIVE:
            raise FibError(f"job {job_id} is already {job['state']}; nothing to cancel")
        if job["external_id"]:  # never started: nothing to stop, just record it
            self.executor(job["executor"]).cancel(job["external_id"], jobs.job_dir(self.session, job))
            jobs.ingest(self.session, job)
        return jobs.finish(self.session, job, "CANCELLED", "cancelled by the curator")

    def wait(self, job_id: str, on_update: Callable[[dict], None] | None = None, poll_s: float = 1.0) -> dict:
        """Block until the job ends; Ctrl-C leaves it running (it is detached)."""
        while True:
            self.refresh()
            job = jobs.get(self.session, job_id)
            if on_update:
                on_update(job)
            if job["state"] not in jobs.ACTIVE:
                return job
            time.sleep(poll_s)
