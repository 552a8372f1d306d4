"""The pieces of an overlapped epoch end: callback copies that write back only what their hooks
changed, and a worker whose drain survives an interruption."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

import pytest
import torch

from vaesae.pack.deferred import CallbackCopies, EpochEndWorker, ThreadFilter


class Evaluation:
    def __init__(self) -> None:
        self.last = None
        self.seen: list[int] = []


class Recorder:
    def __init__(self, evaluation: Evaluation) -> None:
        self.evaluation = evaluation
        self.samples = 0
        self.seconds = 0.0


def test_callback_copies_see_each_other_and_write_back_only_what_they_changed():
    evaluation = Evaluation()
    recorder = Recorder(evaluation)
    recorder.samples = 10
    copies = CallbackCopies([evaluation, recorder])
    evaluation_copy, recorder_copy = copies.copies
    assert recorder_copy.evaluation is evaluation_copy  # not the live evaluation
    # The worker's hooks on the copies, while the pack's thread goes on with the originals.
    evaluation_copy.last = "epoch 3"
    evaluation_copy.seen.append(3)  # in place: shared with the original at once
    recorder_copy.seconds += 1.5
    recorder.samples = 20  # the next epoch's steps
    assert recorder_copy.samples == 10  # frozen at the hand-off
    copies.merge()
    assert evaluation.last == "epoch 3" and evaluation.seen == [3]
    assert recorder.seconds == 1.5
    assert recorder.samples == 20  # the copy never rebound it: the original's stands
    assert recorder.evaluation is evaluation


def test_a_drain_interrupted_while_waiting_leaves_the_task_to_the_next(monkeypatch):
    worker = EpochEndWorker(torch.device("cpu"))
    release, calls = threading.Event(), []
    worker.submit(lambda: release.wait(10), calls.append)
    wait = Future.exception

    def interrupted(self, timeout=None):
        monkeypatch.setattr(Future, "exception", wait)
        raise KeyboardInterrupt

    monkeypatch.setattr(Future, "exception", interrupted)
    with pytest.raises(KeyboardInterrupt):
        worker.drain()
    assert calls == []
    release.set()
    worker.close()
    assert calls == [None]


def test_a_task_that_raises_reaches_its_done_on_the_caller_thread():
    worker = EpochEndWorker(torch.device("cpu"))
    seen = []

    def broken() -> None:
        raise ValueError("no codes")

    worker.submit(broken, lambda err: seen.append((threading.current_thread(), err)))
    worker.close()
    ((thread, err),) = seen
    assert thread is threading.current_thread() and isinstance(err, ValueError)


def test_thread_filter_passes_one_side_of_a_thread():
    me = threading.get_ident()
    record = logging.LogRecord("vaesae", logging.INFO, __file__, 1, "line", None, None)
    assert ThreadFilter(me, inside=True).filter(record)
    assert not ThreadFilter(me, inside=False).filter(record)
    assert ThreadFilter(me + 1, inside=False).filter(record)
