"""Job entry point on the compute side: `python -m remote.run <job-dir>`.

Reads `spec.json`, runs the job kind, writes `result.json` atomically, and
appends a heartbeat to `events.jsonl` every few seconds so the session can
tell a live job from a lost one.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback
from pathlib import Path

from sessions.jobfiles import RESULT, SPEC, append_event, atomic_write_json, read_json

HEARTBEAT_S = 10.0


def _heartbeat(job_dir: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        append_event(job_dir, "heartbeat", pid=os.getpid())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m remote.run <job-dir>", file=sys.stderr)
        return 2
    job_dir = Path(argv[0]).resolve()
    spec = read_json(job_dir / SPEC)
    from remote import evaluate, predict, train

    kinds = {"train": train.run, "predict": predict.run, "evaluate": evaluate.run}
    append_event(job_dir, "started", pid=os.getpid(), host=os.uname().nodename, kind=spec["kind"])
    stop = threading.Event()
    threading.Thread(target=_heartbeat, args=(job_dir, stop), daemon=True).start()
    try:
        result = kinds[spec["kind"]](spec, job_dir)
    except train.Interrupted as e:
        print(str(e), file=sys.stderr)
        return 143  # no result.json: the scheduler requeues, the next run resumes
    except Exception as e:
        traceback.print_exc()
        result = {"status": "failed", "error": f"{type(e).__name__}: {e}"}
    finally:
        stop.set()
    atomic_write_json(job_dir / RESULT, result)
    append_event(job_dir, "finished", status=result["status"])
    return 0 if result["status"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
