"""Holding SIGINT and SIGTERM back across a step that must not be cut in half.

A step such as "start ffmpeg and keep its handle" or "rename the finished file and note
that we did" leaves a file nobody removes when an interrupt lands between its two halves.
:func:`deferred_signals` lets such a step finish and then delivers the signal to whatever
handler was in place before, so the cleanup that handler triggers sees the whole step.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

HELD = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside the block are re-raised when it ends, after
    the handlers it found are back in place. Outside the main thread (where Python allows
    no handlers, so none of ours can interrupt it) this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []

    def hold(signum: int, frame: object) -> None:
        pending.append(signum)

    before = {sig: signal.signal(sig, hold) for sig in HELD}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)
