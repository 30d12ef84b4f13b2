"""Many clips in one ``lsp prep``: checked up front, named uniquely, prepped in isolation.

:func:`plan_clips` looks at every input before any work starts: a path that does not exist
or cannot be read refuses the whole command (a mistyped argument; nothing is written), a
file that exists but cannot be prepped (empty, damaged, no video or audio stream, too
short) is set aside as failed while the others go ahead. Clips whose file names collide
(``dir1/clip.mp4``, ``dir2/clip.mp4``) get names made unique with their folder names, and
the plan says which.

:func:`prep_clips` then runs :func:`lsp_prep.pipeline.prep_video` once per clip, on one of
three executors:

* serial (``jobs=1``): in this process, one clip after another;
* ``local`` with ``jobs > 1``: a pool of worker processes on this machine (started with
  forkserver, or spawn where there is none: MediaPipe's graphs are not fork-safe once
  created), each held to one thread per library so N jobs use N cores;
* ``ray``: one Ray task per clip on an existing cluster (``address="auto"``) or on a
  private local instance (``address="local"``); every node must see the output directory
  at the same path.

A clip that fails (its input, a bug) fails alone: its outcome carries the message and the
others finish. A worker process that dies (killed, out of memory) fails the clips running
at that moment, with a message, and the others go on in a new pool. Workers never touch
the manifest: the driver writes each finished clip's row as it arrives, so rows from
several processes cannot race. Each clip keeps its stage caches and partial file until it
is finished, so an interrupted batch resumes clip by clip when the same command runs again.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import shutil
import signal
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lsp_prep import cache
from lsp_prep.config import PrepConfig
from lsp_prep.errors import InputError, LSPError
from lsp_prep.stages.probe import check_input, check_output_dir

if TYPE_CHECKING:  # the CLI imports this module for its options: pandas only when prepping
    from lsp_prep.dataset.manifest import PrepResult


class Executor(str, Enum):
    """Where the clips run."""

    local = "local"
    """Worker processes of this machine (``jobs`` of them)."""
    ray = "ray"
    """One task per clip on a Ray cluster."""


LOCAL_RAY = "local"
"""``address`` that starts a private Ray instance on this machine instead of joining one."""

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
"""Environment variables that size the thread pools of OpenMP and BLAS libraries."""

INTERRUPT_GRACE_S = 2.0
"""After Ctrl-C, how long the driver waits for workers that got the same signal from the
terminal before it forwards the interrupt to the ones still running."""

PROGRESS_EVERY_S = 0.25
"""A worker reports a stage's progress to the driver at most this often."""

ClipProgressFn = Callable[[str, str, int, "int | None"], None]
"""Called as ``progress(clip, stage, done, total)`` (a clip's name, then as
:data:`lsp_prep.progress.ProgressFn`)."""


def no_clip_progress(clip: str, stage: str, done: int, total: int | None) -> None:
    """A :data:`ClipProgressFn` that reports nothing."""
    return None


@dataclass(frozen=True)
class ClipJob:
    """One clip of a batch: its video and the name of its dataset (``OUT/<name>.h5``)."""

    video: Path
    name: str


@dataclass
class Outcome:
    """What became of one clip: its result, or the one-line reason it failed."""

    video: Path
    name: str
    result: PrepResult | None = None
    error: str = ""
    """Empty when the clip was prepped; else what went wrong and what to do."""
    detail: str = ""
    """The traceback of an unexpected error (shown with ``--verbose``)."""
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclass(frozen=True)
class Plan:
    """The clips to prep, those refused by the up-front check, and notes for the user."""

    jobs: tuple[ClipJob, ...]
    refused: tuple[Outcome, ...]
    notes: tuple[str, ...]
    names: tuple[str, ...]
    """Every clip's dataset name, in the order the videos were given."""


def dataset_names(videos: Sequence[Path]) -> dict[Path, str]:
    """The dataset name of each video: its file name without the extension, or, where two
    videos would get the same name, that name prefixed with as many of their folder names
    as make them differ (``a/x/clip.mp4``, ``b/x/clip.mp4`` -> ``a_x_clip``, ``b_x_clip``)
    and, for two files of one folder, suffixed with the extension (``clip_mp4``,
    ``clip_mov``). Raises InputError if a made-up name is still taken."""
    paths = [Path(os.path.abspath(v)) for v in videos]
    names: dict[Path, str] = {}
    groups: dict[str, list[Path]] = defaultdict(list)
    for p in paths:
        groups[p.stem.casefold()].append(p)
    for group in groups.values():
        if len(group) == 1:
            names[group[0]] = group[0].stem
            continue
        depth = max(len(p.parts) for p in group)
        for d in range(depth):
            for ext in (False, True):
                cand = {p: _name(p, d, ext) for p in group}
                if (d or ext) and len({c.casefold() for c in cand.values()}) == len(group):
                    break
            else:
                continue
            break
        names.update(cand)
    taken: dict[str, Path] = {}
    for p in paths:
        other = taken.setdefault(names[p].casefold(), p)
        if other != p:
            raise InputError(
                f"{other} and {p} would both be written as {names[p]}.h5: rename one of "
                "them, or prep them into different output directories"
            )
    return {Path(v): names[p] for v, p in zip(videos, paths, strict=True)}


def _name(path: Path, depth: int, ext: bool) -> str:
    """``path``'s stem after ``depth`` of its folder names, and its extension if ``ext``."""
    parts = [*path.parent.parts[len(path.parent.parts) - depth :], path.stem]
    if ext and path.suffix:
        parts.append(path.suffix.lstrip("."))
    return "_".join(s.strip("/\\") or "root" for s in parts)


def plan_clips(
    videos: Sequence[Path], *, out_dir: Path, config: PrepConfig, audio: Path | None = None
) -> Plan:
    """Check every input before any work: refuse the command (InputError, nothing written)
    when a path is missing or unreadable or ``out_dir`` is not writable; set aside as
    failed each file that cannot be prepped; name the rest uniquely."""
    videos = [Path(v) for v in videos]
    missing = [f"{v}: no such file" for v in videos if not v.exists()]
    missing += [
        f"{v}: not readable (permission denied)"
        for v in videos
        if v.exists() and not os.access(v, os.R_OK)
    ]
    if missing:
        raise InputError(
            "; ".join(missing) + f" - nothing was prepped: fix the path{'s' * (len(missing) > 1)} "
            "and run again"
        )
    notes: list[str] = []
    unique: dict[Path, Path] = {}
    for v in videos:
        first = unique.setdefault(v.resolve(), v)
        if first is not v:
            notes.append(f"{v} is the same file as {first}: prepped once")
    names = dataset_names(list(unique.values()))
    clashes: dict[str, list[Path]] = defaultdict(list)
    for v in unique.values():
        clashes[v.stem.casefold()].append(v)
    for group in clashes.values():
        if len(group) > 1:
            made = ", ".join(f"{v} -> {names[v]}.h5" for v in group)
            notes.append(f"{len(group)} clips are named {group[0].stem}: written as {made}")
    jobs, refused = [], []
    for v in unique.values():
        try:
            check_input(v, audio=audio, config=config)
        except InputError as exc:
            refused.append(Outcome(v, names[v], error=str(exc)))
        else:
            jobs.append(ClipJob(v, names[v]))
    if jobs:
        _check_writable(Path(out_dir))
    order = tuple(names[v] for v in unique.values())
    return Plan(tuple(jobs), tuple(refused), tuple(notes), names=order)


def _check_writable(out_dir: Path) -> None:
    """:func:`check_output_dir`, then remove the folders it made: they are made when the
    first clip starts, so a command refused before that leaves nothing behind."""
    made = next((p for p in reversed([out_dir, *out_dir.parents]) if not p.exists()), None)
    check_output_dir(out_dir)
    if made is not None:
        shutil.rmtree(made)


@dataclass(frozen=True)
class BatchSettings:
    """What every clip of a batch shares (sent once per clip to a worker)."""

    out_dir: Path
    config: PrepConfig
    audio: Path | None
    force: bool


def prep_clips(
    plan: Plan,
    *,
    out_dir: Path,
    config: PrepConfig = PrepConfig(),
    audio: Path | None = None,
    force: bool = False,
    jobs: int = 1,
    executor: Executor = Executor.local,
    address: str | None = None,
    progress: ClipProgressFn = no_clip_progress,
) -> list[Outcome]:
    """Prep every clip of ``plan`` into ``out_dir``; one :class:`Outcome` per clip of the
    plan (refused ones included), in the plan's order. Each finished clip's manifest row
    is written here, as it arrives.

    Ctrl-C stops every worker (each clip keeps its caches and partial file, so the same
    call resumes) and is raised again once they have stopped."""
    from lsp_prep.dataset.manifest import update_manifest

    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {jobs}")
    settings = BatchSettings(Path(out_dir), config, audio, force)
    done: dict[str, Outcome] = {}

    def finish(outcome: Outcome) -> None:
        if outcome.result is not None:
            update_manifest(settings.out_dir, outcome.result)
        done[outcome.name] = outcome
        progress(outcome.name, "done" if outcome.ok else "failed", 1, 1)

    for o in plan.refused:
        finish(o)
    if not plan.jobs:
        pass
    elif executor is Executor.ray:
        _run_ray(plan.jobs, settings, jobs=jobs, address=address, finish=finish)
    elif jobs == 1 or len(plan.jobs) == 1:
        with _cache_kept(settings.out_dir):
            for job in plan.jobs:
                outcome = prep_one(job, settings, functools.partial(progress, job.name))
                finish(outcome)
                if outcome.interrupted:
                    raise KeyboardInterrupt
    else:
        with _cache_kept(settings.out_dir):
            _run_local(plan.jobs, settings, jobs=jobs, progress=progress, finish=finish)
    return [done[n] for n in plan.names if n in done]


@contextmanager
def _cache_kept(out_dir: Path) -> Iterator[None]:
    """Keep ``out_dir``'s cache folder while the block runs: a clip that finishes removes
    its own stage caches and then the folder if it looks unused
    (:func:`lsp_prep.cache.drop`), which would race with a clip starting in another
    process. A marker file of this process keeps the folder non-empty until the end."""
    marker = out_dir / cache.CACHE_DIR / f".batch-{os.getpid()}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    try:
        yield
    finally:
        marker.unlink(missing_ok=True)
        try:
            marker.parent.rmdir()
        except OSError:
            pass  # clips left caches there to resume from


def prep_one(
    job: ClipJob, settings: BatchSettings, progress: Callable[[str, int, int | None], None]
) -> Outcome:
    """One clip in this process, every failure caught into the outcome (the manifest is
    left to the driver)."""
    from lsp_prep.pipeline import prep_video

    try:
        result = prep_video(
            job.video,
            out_dir=settings.out_dir,
            config=settings.config,
            audio=settings.audio,
            name=job.name,
            force=settings.force,
            progress=progress,
            manifest=False,
        )
    except LSPError as exc:
        return Outcome(job.video, job.name, error=str(exc))
    except KeyboardInterrupt:
        return Outcome(job.video, job.name, error="interrupted", interrupted=True)
    except Exception as exc:  # isolation: a bug in one clip must not stop the others
        return Outcome(
            job.video,
            job.name,
            error=f"{job.video}: unexpected {type(exc).__name__}: {exc} (run with --verbose "
            "for the traceback, and please report it)",
            detail=traceback.format_exc(),
        )
    return Outcome(job.video, job.name, result=result)


# ----------------------------------------------------------------------------- local pool

_QUEUE: Any = None
"""The worker's end of the progress queue (set by :func:`_init_worker`)."""
_LIMITS: Any = None


def limit_threads() -> None:
    """Hold this process to one thread per library that would otherwise start a pool the
    size of the machine (OpenCV, OpenMP, BLAS), so that N worker processes use N cores
    instead of fighting over them. MediaPipe's graph and ffmpeg's decoder keep their own
    threads (they are a small share of a clip's CPU time)."""
    global _LIMITS
    import cv2
    from threadpoolctl import threadpool_limits

    for var in THREAD_VARS:
        os.environ[var] = "1"
    cv2.setNumThreads(1)
    _LIMITS = threadpool_limits(1)  # kept: the limits hold while the object lives


def _init_worker(queue: Any) -> None:
    """Runs once in each worker process: threads limited, progress wired, Ctrl-C ignored
    between clips (a clip being prepped gets it, see :func:`_worker`)."""
    global _QUEUE
    _QUEUE = queue
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    limit_threads()


def _worker(job: ClipJob, settings: BatchSettings) -> Outcome:
    """A worker process's task: one clip, its progress sent to the driver at most every
    :data:`PROGRESS_EVERY_S`, interruptible while it runs."""
    last: dict[str, float] = {}

    def report(stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if done == total or now - last.get(stage, 0.0) >= PROGRESS_EVERY_S:
            last[stage] = now
            _QUEUE.put((job.name, stage, done, total))

    signal.signal(signal.SIGINT, signal.default_int_handler)
    _QUEUE.put((job.name, "probe", 0, 1))  # started: the driver knows who was running
    try:
        return prep_one(job, settings, report)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver where the platform has it (workers start from a clean, small server
    process), else spawn; never plain fork, which copies MediaPipe's threads and graphs."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["lsp_prep.pipeline"])
        return ctx
    return multiprocessing.get_context("spawn")


def _run_local(
    jobs_: Sequence[ClipJob],
    settings: BatchSettings,
    *,
    jobs: int,
    progress: ClipProgressFn,
    finish: Callable[[Outcome], None],
) -> None:
    """The clips on a pool of ``jobs`` worker processes of this machine.

    A worker that dies (killed, out of memory, a crash in native code) breaks the pool: the
    clips that had started then fail with that message, and the others go to a new pool
    (each at most once more, so a clip that kills its worker before reporting cannot loop).
    """
    ctx = _mp_context()
    queue = ctx.Queue()
    stop = threading.Event()
    started: set[str] = set()

    def relay() -> None:  # worker progress -> the caller's callback, on the driver
        while not stop.is_set():
            try:
                clip, stage, done, total = queue.get(timeout=0.1)
            except Exception:  # queue.Empty, or the queue closed at shutdown
                continue
            started.add(clip)
            progress(clip, stage, done, total)

    thread = threading.Thread(target=relay, daemon=True)
    thread.start()
    retried: set[str] = set()
    todo = list(jobs_)
    try:
        while todo:
            broken = _pool_round(todo, settings, ctx, queue, jobs=jobs, finish=finish)
            time.sleep(2 * PROGRESS_EVERY_S)  # let the relay drain the dead pool's reports
            todo = []
            for job in broken:
                if job.name in started or job.name in retried:
                    finish(_died(job))
                else:
                    retried.add(job.name)
                    todo.append(job)
    finally:
        stop.set()
        thread.join()
        queue.close()


def _pool_round(
    jobs_: Sequence[ClipJob],
    settings: BatchSettings,
    ctx: multiprocessing.context.BaseContext,
    queue: Any,
    *,
    jobs: int,
    finish: Callable[[Outcome], None],
) -> list[ClipJob]:
    """``jobs_`` on one pool; returns the clips whose worker pool broke under them."""
    pool = ProcessPoolExecutor(
        min(jobs, len(jobs_)), mp_context=ctx, initializer=_init_worker, initargs=(queue,)
    )
    futures: dict[Future, ClipJob] = {pool.submit(_worker, j, settings): j for j in jobs_}
    pending = set(futures)
    broken: list[ClipJob] = []

    def collect(fut: Future) -> bool:
        """Finish ``fut``'s clip (or set it aside when the pool broke); interrupted?"""
        try:
            outcome = fut.result()
        except BrokenProcessPool:
            broken.append(futures[fut])
            return False
        finish(outcome)
        return outcome.interrupted

    try:
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            if any([collect(f) for f in finished]):
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        _stop_workers(pending)
        for fut in pending:
            if fut.done() and not fut.cancelled():
                collect(fut)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return broken


def _died(job: ClipJob) -> Outcome:
    """The outcome of a clip whose worker process died under it."""
    return Outcome(
        job.video,
        job.name,
        error=f"{job.video}: the worker process preparing it died (killed, or out of "
        "memory?): run the same command again to resume it",
    )


def _stop_workers(pending: set[Future]) -> None:
    """After Ctrl-C: cancel the clips not started, give running workers that got the
    terminal's signal :data:`INTERRUPT_GRACE_S` to stop, then interrupt the rest."""
    for fut in pending:
        fut.cancel()
    running = {f for f in pending if not f.done()}
    _, running = wait(running, timeout=INTERRUPT_GRACE_S)
    if running:
        for child in multiprocessing.active_children():
            if child.pid is not None:
                os.kill(child.pid, signal.SIGINT)
        wait(running)


# ----------------------------------------------------------------------------- Ray

RAY_MISSING = "the ray executor needs Ray: pip install 'lsp-toolkit[ray]'"


def _ray_task(job: ClipJob, settings: BatchSettings) -> Outcome:
    """One clip as a Ray task (in a Ray worker process, on any node)."""
    limit_threads()
    return prep_one(job, settings, lambda stage, done, total: None)


def _run_ray(
    jobs_: Sequence[ClipJob],
    settings: BatchSettings,
    *,
    jobs: int,
    address: str | None,
    finish: Callable[[Outcome], None],
) -> None:
    """One Ray task per clip (one CPU each), outcomes collected here as they finish."""
    try:
        import ray
    except ImportError:
        raise InputError(RAY_MISSING) from None
    address = address or "auto"
    started = not ray.is_initialized()
    if started:
        try:
            if address == LOCAL_RAY:
                ray.init(
                    num_cpus=jobs,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level=logging.ERROR,
                )
            else:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise InputError(
                f"no Ray cluster at --address {address} ({exc}): start one with `ray start "
                f"--head`, or use --address {LOCAL_RAY} for a private instance on this machine"
            ) from None
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
    pending: list = []
    try:
        with _cache_kept(settings.out_dir):
            refs = {task.remote(j, settings): j for j in jobs_}
            pending = list(refs)
            _collect_ray(ray, refs, pending, finish)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)  # a running task gets KeyboardInterrupt and keeps its caches
        raise
    finally:
        if started:
            ray.shutdown()


def _collect_ray(ray: Any, refs: dict, pending: list, finish: Callable[[Outcome], None]) -> None:
    """Each Ray task's outcome to ``finish`` as it completes (``pending`` shrinks in place,
    so the caller can cancel what is left)."""
    while pending:
        ready, rest = ray.wait(pending, num_returns=1)
        pending[:] = rest
        for ref in ready:
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as exc:  # a worker or node died
                job = refs[ref]
                outcome = Outcome(
                    job.video,
                    job.name,
                    error=f"{job.video}: its Ray task failed ({type(exc).__name__}): run "
                    "the same command again to resume it",
                    detail=str(exc),
                )
            finish(outcome)
