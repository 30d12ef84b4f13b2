"""Steps that an interrupt must not cut in half (lsp_prep.signals) and the video writer
that relies on them: an interrupt while ffmpeg starts, or after the file was renamed into
place, leaves nothing behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lsp_models.infer.video import VideoWriter
from lsp_prep.signals import deferred_signals


def test_signal_inside_block_arrives_after_it_once():
    got: list[tuple[int, bool]] = []
    inside = [False]
    before = signal.signal(signal.SIGTERM, lambda s, f: got.append((s, inside[0])))
    try:
        with deferred_signals():
            inside[0] = True
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            time.sleep(0.01)
            assert got == []
            inside[0] = False
        assert got == [(signal.SIGTERM, False)]
        assert signal.getsignal(signal.SIGTERM) is not None
    finally:
        signal.signal(signal.SIGTERM, before)


def test_keyboard_interrupt_in_block_reaches_caller_after_block():
    steps = []
    # Python's own handler, also where pytest started with SIGINT ignored (a shell starts
    # background jobs so when job control is off, and Python keeps that)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with deferred_signals():
                signal.raise_signal(signal.SIGINT)
                steps.append("finished")
        assert steps == ["finished"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, before)


def _left(folder: Path, timeout: float = 5.0) -> list[str]:
    """The files in ``folder`` once no ffmpeg still writes there (or after ``timeout``)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        busy = subprocess.run(["pgrep", "-f", str(folder)], capture_output=True).stdout.strip()
        if not busy:
            break
        time.sleep(0.05)
    return sorted(p.name for p in folder.iterdir())


INTERRUPTED_START = """
import signal, subprocess, sys
from pathlib import Path
from lsp_models.infer.video import VideoWriter

signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it

real = subprocess.Popen._execute_child

def start_then_signal(self, args, *rest):
    real(self, args, *rest)  # the child runs; Popen has not returned its handle yet
    if "pipe:0" in args:  # the writer's ffmpeg (not a probe of the binary)
        signal.raise_signal(signal.SIGINT)

subprocess.Popen._execute_child = start_then_signal
try:
    VideoWriter(Path(sys.argv[1]) / "x.mp4", fps=30, size=64, audio=None)
except KeyboardInterrupt:
    sys.exit(130)
"""


def test_interrupt_while_ffmpeg_starts_leaves_no_file(tmp_path):
    """SIGINT arriving once Popen has started ffmpeg but before it returns, in a process
    that then exits: the writer still holds ffmpeg, stops it and removes its temporary
    file (before, Popen dropped the handle, and the orphaned ffmpeg, its input closed,
    wrote an empty video there)."""
    root = Path(__file__).parents[1]
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_START, str(tmp_path)], cwd=root, timeout=60
    )
    assert done.returncode == 130
    assert _left(tmp_path) == []


def test_abort_after_close_removes_the_finished_file(tmp_path):
    out = tmp_path / "x.mp4"
    writer = VideoWriter(out, fps=30, size=64, audio=None)
    writer.write(np.zeros((3, 64, 64, 3), np.uint8))
    assert writer.close() == out and out.stat().st_size > 0
    writer.abort()
    assert _left(tmp_path) == []
