"""Fault injection for the reliability tests: run an ``lsp`` command in a child process and
kill it with SIGINT, SIGTERM or SIGKILL at a chosen moment, then compare what a rerun
leaves with what an uninterrupted run wrote.

The children are forked from a multiprocessing fork server that imported the CLI, the
prep pipeline and torch once, so each start costs milliseconds instead of the seconds a
fresh interpreter needs to import them (most of a kill's cost on a 2-core machine). The
child runs exactly what ``lsp ...`` runs (``cli.main.main``) with its signal handling, and
kills are timed from the moment it reached it (before, on a loaded machine, up to ~1.5 s
of forking and multiprocessing's start-up would meet the signal instead).
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

PRELOAD = ["cli.main", "lsp_prep.pipeline", "torch", "lsp_models.train.runner"]
"""Modules the fork server imports before it forks any child."""

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGKILL)

EXIT_AFTER = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}
"""The exit code a command killed by each signal must end with (a negative code is the
signal that ended the process; SIGKILL cannot be handled)."""

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)


def _child(args: list[str], log: str, env: dict[str, str], started: Any) -> None:
    """The child: ``lsp ARGS`` with stdout and stderr into ``log``; exits with its code.
    Sets ``started`` once ``lsp``'s own signal handling is in place (what the first
    moment of ``cli.main.main`` does), so that kills are timed from there."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)
    from cli._common import exit_on_signals
    from cli.main import main

    exit_on_signals()
    started.set()

    sys.argv = ["lsp", *args]
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass(frozen=True)
class Outcome:
    """How one child run ended."""

    exit_code: int
    """The process's exit code; minus the signal's number when a signal ended it."""
    output: str
    """Everything it printed (stdout and stderr)."""
    killed: bool
    """Whether the signal was sent (False: it finished before ``after_s``)."""
    seconds: float = 0.0
    """Wall time from the command's start (after the fork) to its end."""
    pid: int = 0
    """The command's process id (temporary files carry it)."""


def run_lsp(
    args: Sequence[object],
    *,
    log: Path,
    kill: int | None = None,
    after_s: float = 0.0,
    timeout_s: float = 300.0,
) -> Outcome:
    """Run ``lsp ARGS`` in a child; with ``kill``, send that signal ``after_s`` seconds
    after the command started (if it is still running) and wait for it to end."""
    env = {"LSP_NO_PROGRESS": "1", "PYTHONWARNINGS": "ignore"}
    started = _context.Event()
    proc = _context.Process(target=_child, args=([str(a) for a in args], str(log), env, started))
    proc.start()
    killed = False
    started.wait(timeout_s)  # forking a child of the server takes up to ~1.5 s here
    t0 = time.perf_counter()
    if kill is not None:
        proc.join(after_s)
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, kill)
            killed = True
    proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise TimeoutError(f"lsp {' '.join(map(str, args))} ran past {timeout_s} s")
    seconds = time.perf_counter() - t0
    assert proc.exitcode is not None
    output = Path(log).read_text(errors="replace") if Path(log).exists() else ""
    return Outcome(proc.exitcode, output, killed, seconds, proc.pid or 0)


def wait_for_orphans(marker: str, *, timeout_s: float = 60.0) -> None:
    """Wait until no process whose command line contains ``marker`` is left. A command
    killed with SIGKILL cannot stop its children: an ffmpeg encoder it started reads end of
    input and finishes its file on its own, a moment after the command is gone."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = False
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                alive |= marker.encode() in cmdline.read_bytes()
            except OSError:  # the process ended while we looked
                continue
        if not alive:
            return
        time.sleep(0.1)
    raise TimeoutError(f"a process with {marker!r} in its command line ran past {timeout_s} s")


@dataclass(frozen=True)
class Kill:
    """One planned kill: which signal, how long after the start."""

    signal: int
    after_s: float


def plan_kills(
    seed: int, *, count: int, duration_s: float, start_s: float = 0.2, chain: bool = True
) -> list[Kill]:
    """``count`` kills of a command that takes ``duration_s`` uninterrupted: signals drawn
    in turn from :data:`SIGNALS` (order shuffled by ``seed``), moments drawn uniformly over
    the uninterrupted run. With ``chain`` (a command that resumes), each run resumes what
    the last one finished, so the moments are sorted and kill ``j`` comes the gap between
    moments ``j - 1`` and ``j`` after its run starts (at least ``start_s``): the kills land
    spread over the whole command instead of all in its first stage. Without it (a command
    that starts over), each kill comes at its own moment."""
    rng = random.Random(seed)
    sigs = [SIGNALS[i % len(SIGNALS)] for i in range(count)]
    rng.shuffle(sigs)
    moments = [rng.uniform(start_s, max(start_s, duration_s)) for _ in range(count)]
    if not chain:
        return [Kill(s, m) for s, m in zip(sigs, moments, strict=True)]
    gaps = np.diff([0.0, *sorted(moments)])
    return [Kill(s, max(start_s, float(g))) for s, g in zip(sigs, gaps, strict=True)]


def kill_chain(
    args: Sequence[object],
    kills: Sequence[Kill],
    *,
    logs: Path,
    after_each: Callable[[Outcome], None] | None = None,
) -> tuple[list[Outcome], Outcome]:
    """Run ``lsp ARGS`` once per planned kill (each run killed as planned, each resuming
    what the last left; ``after_each`` inspects the state after each), then once more to
    the end. Returns the killed runs' outcomes and the last one's."""
    logs.mkdir(parents=True, exist_ok=True)
    outcomes = []
    for i, k in enumerate(kills):
        outcome = run_lsp(args, log=logs / f"kill{i}.log", kill=k.signal, after_s=k.after_s)
        outcomes.append(outcome)
        if after_each is not None:
            after_each(outcome)
    return outcomes, run_lsp(args, log=logs / "final.log")


def timed_run(args: Sequence[object], *, log: Path) -> tuple[Outcome, float]:
    """An uninterrupted run and its wall time from the command's start, as the kills are
    timed (used to place them inside it; the fork before it is left out)."""
    outcome = run_lsp(args, log=log)
    return outcome, outcome.seconds


def h5_content(path: Path) -> dict[str, object]:
    """Every array and attribute of an HDF5 file (root and groups), by name: two files
    with equal content compare equal even when HDF5 laid them out differently."""
    out: dict[str, object] = {}
    with h5py.File(path, "r") as f:
        out.update({f"@{k}": _plain(v) for k, v in f.attrs.items()})

        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                if data.dtype == object:  # variable-length JPEG bytes per frame
                    data = [bytes(x) for x in data]
                out[name] = data
            for k, v in getattr(obj, "attrs", {}).items():
                out[f"{name}@{k}"] = _plain(v)

        f.visititems(visit)
    return out


def _plain(value: object) -> object:
    return value.tolist() if isinstance(value, np.ndarray) else value


def assert_same_content(a: dict[str, object], b: dict[str, object]) -> None:
    """Equal keys and exactly equal values (NaN equal to NaN)."""
    assert sorted(a) == sorted(b)
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, list) and x and isinstance(x[0], bytes):
            assert x == y, key
        elif isinstance(x, np.ndarray | list | float):
            np.testing.assert_array_equal(x, y, err_msg=key)
        else:
            assert x == y, key
