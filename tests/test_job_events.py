"""Folding job events into SQLite: incremental, exactly once, even with two writers."""

import threading

from sessions import jobfiles, jobs
from sessions.workspace import open_session


def _job(session):
    session.db["rounds"].insert({"n": 1, "created": "t", "target": None, "parent": None, "status": "open"})
    return jobs.create(session, 1, "train", {"x": 1}, "local")


def test_partial_last_line_waits_for_its_newline(session):
    job = _job(session)
    d = jobs.job_dir(session, job)
    jobfiles.append_event(d, "progress", step=1, total=10, loss=0.5)
    with open(d / jobfiles.EVENTS, "a") as fh:
        fh.write('{"t": 1, "type": "progress", "step": 2')  # a writer caught mid-line
    job = jobs.ingest(session, job)
    assert jobs.metrics(session, job["id"], "loss")[-1]["step"] == 1
    with open(d / jobfiles.EVENTS, "a") as fh:
        fh.write(', "total": 10, "loss": 0.4}\n')
    job = jobs.ingest(session, job)
    assert [m["step"] for m in jobs.metrics(session, job["id"], "loss")] == [1, 2]
    assert job["progress"] == 0.2 and job["message"] == "it 2/10 loss 0.4000"


def test_two_writers_ingest_each_event_once(session):
    job = _job(session)
    d = jobs.job_dir(session, job)
    for i in range(300):
        jobfiles.append_event(d, "progress", step=i + 1, total=300, loss=1.0 / (i + 1))

    def worker():
        s = open_session(session.root)
        for _ in range(20):
            jobs.ingest(s, jobs.get(s, job["id"]))
        s.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    steps = [m["step"] for m in jobs.metrics(session, job["id"], "loss")]
    assert steps == list(range(1, 301))


def test_checkpoint_and_metric_events_recorded(session):
    job = _job(session)
    d = jobs.job_dir(session, job)
    jobfiles.append_event(d, "started", pid=1)
    jobfiles.append_event(d, "checkpoint", step=100, path="checkpoint.pt")
    jobfiles.append_event(d, "metric", name="iou", value=0.8)
    job = jobs.ingest(session, job)
    assert job["state"] == "RUNNING" and job["started"]
    assert session.db["checkpoints"].count == 1
    assert jobs.metrics(session, job["id"], "iou")[0]["value"] == 0.8
