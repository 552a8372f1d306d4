"""A pack member's epoch end measured while the pack trains its next epoch
(``hydra.launcher.overlap``).

At an epoch's end a member's schedule and remedy hooks run in place, because the next epoch
trains on what they leave. Its measuring hooks (evaluation, recorder, pictures, W&B, wall
time, checkpoint) only read the epoch's state, so the member freezes that state
(`vaesae.pack.member.EpochEndView`) and hands it to :class:`EpochEndWorker`, one background
thread; the pack goes on training. Before the next epoch's end the worker is drained, and what
the measuring hooks left on their copies (:class:`CallbackCopies`) is written back to the
member's own callbacks, so every file, checkpoint and figure is the one the epoch end run in
place writes.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

__all__ = ["CallbackCopies", "EpochEndWorker", "ThreadFilter"]


class ThreadFilter(logging.Filter):
    """Passes the records logged from thread ``ident`` (``inside=True``) or from any other
    thread (``inside=False``): a member's log lines reach its train.log from the pack's thread
    and from the worker's, and no other member's do."""

    def __init__(self, ident: int | None, inside: bool) -> None:
        super().__init__()
        self.ident, self.inside = ident, inside

    def filter(self, record: logging.LogRecord) -> bool:
        return (record.thread == self.ident) == self.inside


class CallbackCopies:
    """Shallow copies of ``callbacks`` for one epoch end off the pack's thread.

    A copy holds the original's attributes as they stand at the hand-off, so what the pack's
    thread rebinds on the original during the next epoch (a step counter, a clock) is not seen
    by the copy; a reference from one of them to another (the recorder's to the evaluation) is
    pointed at the other's copy. :meth:`merge` writes back what the copies rebound or added
    (the evaluation's result, the recorder's training seconds), which the original then holds
    as if its own hook had run. In-place changes (a list appended to) reach the original at
    once: they are the shared objects a shallow copy keeps.
    """

    def __init__(self, callbacks: list[Any]) -> None:
        self.originals = list(callbacks)
        self.copies = [copy.copy(cb) for cb in self.originals]
        copy_of = {id(o): c for o, c in zip(self.originals, self.copies, strict=True)}
        for c in self.copies:
            for name, value in vars(c).items():
                if id(value) in copy_of:
                    setattr(c, name, copy_of[id(value)])
        self._handed = [dict(vars(c)) for c in self.copies]

    def merge(self) -> None:
        for original, c, handed in zip(self.originals, self.copies, self._handed, strict=True):
            for name, value in vars(c).items():
                if name not in handed or value is not handed[name]:
                    setattr(original, name, value)


class EpochEndWorker:
    """One background thread that runs the epoch ends handed to it, in order.

    On CUDA it runs them on a stream of its own, each after the work the pack queued before
    handing it over (an event), and waits for that stream before letting go of a task's
    tensors, so the pack's stream never reuses their memory while the worker still reads it.
    """

    def __init__(self, device: torch.device) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vaesae-epoch-end")
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._pending: list[tuple[Future[None], Callable[[BaseException | None], None]]] = []

    def submit(
        self, task: Callable[[], object], done: Callable[[BaseException | None], None]
    ) -> None:
        """Run ``task`` on the worker; :meth:`drain` calls ``done(error)`` on the caller's
        thread afterwards (``error`` None when the task returned)."""
        ready = None
        if self._stream is not None:
            ready = torch.cuda.Event()
            ready.record()
        self._pending.append((self._pool.submit(self._run, task, ready), done))

    def _run(self, task: Callable[[], object], ready: torch.cuda.Event | None) -> None:
        if self._stream is None or ready is None:
            task()
            return
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(ready)
            try:
                task()
            finally:
                self._stream.synchronize()

    def drain(self) -> float:
        """Wait for every task handed over and call their ``done`` in order; returns the
        seconds waited (the epoch ends that did not fit under the epoch that followed)."""
        start = time.perf_counter()
        while self._pending:
            future, done = self._pending[0]
            error = future.exception()
            # Only once it has finished: a drain interrupted while waiting leaves the task to
            # the next drain (the engine's on the way out), which waits for it again.
            self._pending.pop(0)
            done(error)
        return time.perf_counter() - start

    def close(self) -> None:
        self.drain()
        self._pool.shutdown()
