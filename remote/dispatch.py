"""Submitting round jobs and keeping the session in step with them.

`refresh` is what the CLI and the TUI call on a timer: one batched status
query per executor (one `squeue` for all Slurm jobs), then events → SQLite,
with each job's elapsed time, GPUs and GPU-hours. It is safe to call from a
fresh process at any time, which is how a restarted TUI re-attaches to jobs.

`wait` does not hammer the scheduler: the pause between status queries grows
(1 s → 30 s, × 1.5 each time, capped lower for cheap executors such as
`local`) and drops back to the start when the job changes state. Where the job
directory is readable here (local, Slurm on a shared filesystem), progress
events are folded every second in between without asking the scheduler.
"""

from __future__ import annotations

import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from remote.executors import Executor, get_executor
from sessions import jobs, rounds
from sessions.errors import FibError
from sessions.jobfiles import append_event
from sessions.workspace import Session


SUBMIT_GRACE_S = 120.0  # a submission takes seconds; an SSH preflight at most ~20 s


class Backoff:
    """A growing poll interval: initial, ×factor per call, capped; `reset` on a change."""

    def __init__(self, initial: float = 1.0, cap: float = 30.0, factor: float = 1.5):
        if not (initial > 0 and cap >= initial and factor >= 1):
            raise ValueError(f"Backoff({initial}, {cap}, {factor}): need 0 < initial <= cap and factor >= 1")
        self.initial, self.cap, self.factor = float(initial), float(cap), float(factor)
        self._next = self.initial

    def next(self) -> float:
        """The pause to take now; the one after is longer (up to the cap)."""
        d = self._next
        self._next = min(self.cap, self._next * self.factor)
        return d

    def reset(self) -> None:
        self._next = self.initial

    def schedule(self, n: int) -> list[float]:
        """The next n pauses (consumes them)."""
        return [self.next() for _ in range(n)]


class Dispatcher:
    def __init__(self, session: Session, *, sleep: Callable[[float], None] = time.sleep,
                 executors: dict[str, Executor] | None = None):
        """`executors`: a cache to share across Dispatchers (the TUI keeps its SSH connections open)."""
        self.session = session
        self._executors: dict[str, Executor] = {} if executors is None else executors
        self._sleep = sleep
        self.errors: dict[str, str] = {}  # executor name → why its last status query failed

    def executor(self, name: str) -> Executor:
        if name not in self._executors:
            self._executors[name] = get_executor(name)
        return self._executors[name]

    def close(self) -> None:
        for ex in self._executors.values():
            ex.close()

    def submit(self, round_n: int, kind: str, spec: dict, executor: str = "local", *, resumes: str | None = None,
               prepare: Callable[[Path], None] | None = None) -> dict:
        """Check the executor (reachable, fibtui installed there), create the job, submit it.

        `resumes`: the job this one is a new attempt of (jobs.resumes). `prepare(job_dir)` runs
        after the job directory is made and before the executor sees it (e.g. to put a checkpoint in).
        When the check, `prepare` or the submission fails, the session is left as it was (no job row,
        no job directory) and the error is one line."""
        ex = self.executor(executor)
        ex.preflight()
        job = jobs.create(self.session, round_n, kind, spec, ex.name, resumes=resumes)
        d = jobs.job_dir(self.session, job)
        try:
            if prepare is not None:
                prepare(d)
            ext = ex.submit(d)
        except BaseException as e:
            self.session.db["jobs"].delete(job["id"])
            shutil.rmtree(d, ignore_errors=True)
            if isinstance(e, FibError):
                raise
            if not isinstance(e, Exception):
                raise
            raise FibError(f"job {job['id']}: could not be submitted to {ex.name} ({e})") from None
        self.session.db["jobs"].update(job["id"], {"external_id": ext})
        return {**job, "external_id": ext}

    def resume(self, job_id: str, *, iterations: int | None = None, executor: str | None = None,
               settle_s: float = 30.0) -> dict:
        """Continue a stopped training as a new attempt (same round; jobs.resumes = job_id) and submit it.

        Runs on the old attempt's executor unless `executor` names another. The old attempt is first
        given up to `settle_s` to finish stopping (a cancelled training writes its checkpoint on the way
        out), its directory is fetched here (results(): an SSH pull), its late events are folded; then its
        checkpoint.pt is copied into the new job directory before the executor submits it, so the
        training continues from that iteration exactly. A failure leaves no job row and no directory."""
        old = jobs.get(self.session, job_id)
        if old["kind"] == "train" and old["state"] in jobs.STOPPED:
            self._settle(old, settle_s)
            src = self.results(job_id) / jobs.CHECKPOINT  # an SSH pull brings its last events and checkpoint
        round_n, spec = rounds.resume_spec(self.session, job_id, iterations=iterations)  # refuses all else
        if not src.is_file():
            raise FibError(f"job {job_id}: its checkpoint {src} is missing (deleted?); train again instead")

        def prepare(d: Path) -> None:
            tmp = d / f".{jobs.CHECKPOINT}.tmp"
            shutil.copyfile(src, tmp)
            tmp.replace(d / jobs.CHECKPOINT)
            # recorded as the new attempt's own: stopped before its first step, it can still be resumed
            append_event(d, "checkpoint", step=spec["resume_from"]["iteration"], path=jobs.CHECKPOINT,
                         copied_from=job_id)

        return self.submit(round_n, "train", spec, executor or old["executor"], resumes=job_id, prepare=prepare)

    def _settle(self, job: dict, timeout_s: float) -> None:
        """Wait until the executor no longer runs `job` (recorded as ended, its process may still be stopping)."""
        if not job["external_id"]:
            return
        ex, d = self.executor(job["executor"]), jobs.job_dir(self.session, job)
        t0 = time.monotonic()
        while True:
            st = ex.status([(job["external_id"], d)]).get(job["external_id"])
            if st is None or st.state not in jobs.ACTIVE:
                return
            if time.monotonic() - t0 >= timeout_s:
                raise FibError(f"job {job['id']} is still stopping on {job['executor']} after {timeout_s:.0f} s; "
                               "resume it once it has ended")
            self._sleep(0.5)

    def reconcile(self, grace_s: float = SUBMIT_GRACE_S) -> list[str]:
        """Settle what a submitter killed mid-submission left: every job ends up submitted or gone.

        A job row without an executor id is adopted when the job's own `started` event names its id
        (the submitter died between the executor's answer and recording it), and is otherwise removed
        with its directory (it died before handing the job over); a job directory without a row, in
        which nothing ever ran, is removed. Only what is older than `grace_s`: a slow submission (SSH
        preflight) in another process must not be taken for a dead one. Returns what it did, one line
        each."""
        rows, stray = jobs.unsubmitted(self.session, grace_s)
        done = []
        for job in rows:
            ext = jobs.started_id(self.session, job)
            if ext:
                self.session.db["jobs"].update(job["id"], {"external_id": ext})
                done.append(f"{job['id']}: adopted ({job['executor']} id {ext})")
            else:
                self.session.db["jobs"].delete(job["id"])
                shutil.rmtree(jobs.job_dir(self.session, job), ignore_errors=True)
                done.append(f"{job['id']}: removed (its submission never reached {job['executor']})")
        for d in stray:
            shutil.rmtree(d, ignore_errors=True)
            done.append(f"{d.name}: removed (a job directory without a job)")
        return done

    def refresh(self) -> list[dict]:
        """Ingest events of every active job, record resource use, settle the finished ones; return them updated.

        An executor that cannot be asked (host down) leaves its jobs as they are; why is in `errors`."""
        self.reconcile()
        active = jobs.active(self.session)
        by_ex: dict[str, list[dict]] = defaultdict(list)
        for job in active:
            by_ex[job["executor"]].append(job)
        updated = []
        for name, group in by_ex.items():
            try:
                states = self.executor(name).status(
                    [(j["external_id"], jobs.job_dir(self.session, j)) for j in group if j["external_id"]])
                self.errors.pop(name, None)
            except FibError as e:
                self.errors[name] = str(e)
                updated += [jobs.ingest(self.session, j) for j in group]
                continue
            for job in group:
                job = jobs.ingest(self.session, job)
                st = states.get(job["external_id"])
                if st is not None:
                    job = jobs.record_usage(self.session, job, st.elapsed_s, st.gpus, st.gpu_hours)
                if st and st.state not in jobs.ACTIVE:  # status came first: its events are all in
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

    def cancel_round(self, round_n: int) -> list[dict]:
        """Cancel every active job of a round in one go per executor (one `scancel` for all Slurm jobs)."""
        todo = [j for j in jobs.active(self.session) if j["round"] == round_n]
        by_ex: dict[str, list[dict]] = defaultdict(list)
        for job in todo:
            if job["external_id"]:
                by_ex[job["executor"]].append(job)
        for name, group in by_ex.items():
            self.executor(name).cancel_many([(j["external_id"], jobs.job_dir(self.session, j)) for j in group])
        out = []
        for job in todo:
            job = jobs.ingest(self.session, job)
            out.append(jobs.finish(self.session, job, "CANCELLED", f"cancelled with round {round_n}"))
        return out

    def log_tail(self, job_id: str, lines: int = 20) -> str:
        job = jobs.get(self.session, job_id)
        d = jobs.job_dir(self.session, job)
        if not job["external_id"]:
            return ""
        return self.executor(job["executor"]).log_tail(job["external_id"], d, lines)

    def results(self, job_id: str) -> Path:
        job = jobs.get(self.session, job_id)
        d = jobs.job_dir(self.session, job)
        if not job["external_id"]:
            return d
        return self.executor(job["executor"]).results(job["external_id"], d)

    def wait(self, job_id: str, on_update: Callable[[dict], None] | None = None, poll_s: float = 1.0,
             max_poll_s: float = 30.0) -> dict:
        """Block until the job ends; Ctrl-C leaves it running (it is detached).

        Status queries back off from `poll_s` to `max_poll_s` (or the executor's own, lower cap),
        and start again from `poll_s` when the job's state changes."""
        job = jobs.get(self.session, job_id)
        ex = self.executor(job["executor"])
        backoff = Backoff(poll_s, max(poll_s, min(max_poll_s, ex.max_poll_s)))
        last_state = None
        while True:
            self.refresh()
            job = jobs.get(self.session, job_id)
            if on_update:
                on_update(job)
            if job["state"] not in jobs.ACTIVE:
                return job
            if job["state"] != last_state:
                backoff.reset()
                last_state = job["state"]
            pause = backoff.next()
            if not ex.events_local:  # events arrive with the next status query (an SSH pull): just wait
                self._sleep(pause)
                continue
            # between status queries: fold events where they are readable here (cheap, no scheduler call)
            while pause > 0:
                step = min(poll_s, pause)
                self._sleep(step)
                pause -= step
                if pause > 0:
                    job = jobs.ingest(self.session, job)
                    if on_update:
                        on_update(job)
