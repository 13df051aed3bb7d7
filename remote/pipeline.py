"""Read-ahead and write-behind: one background thread on each side of a compute loop.

Blockwise prediction reads a block's input (zarr decode, mirror padding), computes, and writes the
output (zarr encode, then the ledger). Done in line, the accelerator waits for both ends; with a thread
reading the next inputs into a bounded queue and another writing finished outputs from one, the compute
loop only computes. The queues are bounded, so memory stays at `depth` items on each side.

Failure rules (a job must fail loudly, never hang): an exception in either thread is raised in the
thread that drives the loop, at its next `next()` / `put()` or at the end; when the loop itself fails,
both threads are stopped and joined, and nothing queued is written. Every blocking wait is a short
timed wait that re-checks a stop flag, so no side can wait for ever on a side that has died.
No torch here: the threads run numpy and zarr code only (torch's own threads stay with the loop).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator

POLL = 0.1  # seconds between re-checks of the stop flag while a queue is full or empty
_END = object()


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless stopped first; True when it went in."""
    while not stop.is_set():
        try:
            q.put(item, timeout=POLL)
            return True
        except queue.Full:
            continue
    return False


class ReadAhead:
    """`fn(item)` for each of `items`, in order, computed up to `depth` ahead in a background thread.

    Iterate it inside `with`: leaving the block (normally or by an exception) stops the thread."""

    def __init__(self, items: Iterable, fn: Callable, depth: int = 2):
        self.q: queue.Queue = queue.Queue(max(1, depth))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(iter(items), fn), name="read-ahead", daemon=True)
        self.thread.start()

    def _fill(self, items: Iterator, fn: Callable) -> None:
        try:
            for item in items:
                if not _put(self.q, ("ok", fn(item)), self.stop):
                    return
            _put(self.q, ("end", _END), self.stop)
        except BaseException as e:  # noqa: BLE001 - handed to the loop, which raises it
            _put(self.q, ("error", e), self.stop)

    def __iter__(self):
        return self

    def __next__(self):
        while True:
            try:
                kind, value = self.q.get(timeout=POLL)
                break
            except queue.Empty:
                if not self.thread.is_alive() and self.q.empty():
                    raise RuntimeError("the read-ahead thread ended without a result") from None
        if kind == "error":
            raise value
        if kind == "end":
            raise StopIteration
        return value

    def close(self) -> None:
        self.stop.set()
        self.thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WriteBehind:
    """`fn(item)` for each `put(item)`, in order, in a background thread, at most `depth` waiting.

    Leaving the `with` block normally waits for every item to be done and raises the thread's error if
    it had one; leaving it by an exception drops what is still queued (the loop failed: a resumed job
    redoes those items) and stops the thread."""

    def __init__(self, fn: Callable, depth: int = 2):
        self.q: queue.Queue = queue.Queue(max(1, depth))
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._drain, args=(fn,), name="write-behind", daemon=True)
        self.thread.start()

    def _drain(self, fn: Callable) -> None:
        while not self.stop.is_set():
            try:
                item = self.q.get(timeout=POLL)
            except queue.Empty:
                continue
            if item is _END:
                return
            try:
                fn(item)
            except BaseException as e:  # noqa: BLE001 - raised in the loop's thread
                self.error = e
                self.stop.set()
                return

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def put(self, item) -> None:
        self._raise()
        if not _put(self.q, item, self.stop):
            self._raise()
            raise RuntimeError("the write-behind thread stopped")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            if _put(self.q, _END, self.stop):
                self.thread.join()
            self._raise()
        else:
            self.stop.set()
            self.thread.join()
