"""Work beside the caller's thread during prep: :class:`Beside` (one worker thread for
stages that can overlap) and :func:`timed` (a block's wall time into a timings dict)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


@contextmanager
def timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Record the wall time of the block as ``timings[stage]`` (also when it raises)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - t


class Beside:
    """One worker thread that runs stages beside this thread's (a context manager).

    The heavy parts of those stages (OpenCV, MediaPipe, NumPy, HDF5 and JPEG decoding)
    mostly release the GIL (py-spy: the shoulders' tracking holds it 54 % of its time, the
    features' measurement 11 %), so the two threads use two cores. Leaving the block (also
    by an error or Ctrl-C) sets :attr:`stop`, which a long task checks between frames, and
    waits for the worker: no thread outlives the stages, and nothing is left half-written
    (each stage's cache is written atomically, by whichever thread computed it). With
    ``threaded=False`` a task runs at once on the caller's thread."""

    def __init__(self, timings: dict[str, float], *, threaded: bool = True) -> None:
        self.stop = threading.Event()
        self._timings = timings
        self._pool = ThreadPoolExecutor(1, "lsp-prep-beside") if threaded else None

    def submit(self, stage: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``fn(*args, **kwargs)`` on the worker (after what was submitted before);
        its wall time goes to ``timings[f"{stage} (beside)"]``. Its exception, if any, is
        raised by the future's ``result()``."""

        def run() -> T:
            with timed(self._timings, f"{stage} (beside)"):
                return fn(*args, **kwargs)

        if self._pool is not None:
            return self._pool.submit(run)
        done: Future[T] = Future()
        try:
            done.set_result(run())
        except Exception as exc:
            done.set_exception(exc)
        return done

    def __enter__(self) -> Beside:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
