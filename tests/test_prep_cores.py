"""Both cores busy in one ``lsp prep`` (issue 13, item 1): Face Mesh's mirror graph on a
worker thread beside the direct one, and the stages that do not need each other's results
run beside each other (lsp_prep.beside.Beside: geometry beside the frames, the
shoulders' point tracking beside the features). Each is checked to give exactly the
serial result, and Ctrl-C on either thread to stop both and resume to the same dataset."""

from __future__ import annotations

import threading
from concurrent.futures import CancelledError
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from lsp_prep import pipeline
from lsp_prep.config import PrepConfig
from lsp_prep.media import iter_frames, probe
from lsp_prep.stages.track import FaceMeshTracker, TrackConfig, quiet_native_stderr
from tests.faults import assert_same_content, h5_content

FEWER = PrepConfig().with_overrides(
    ["camera.n_frames=16", "features.calib_frames=16", "features.every=8"]
)
"""Every stage runs; the focal searches on fewer frames to keep the tests short."""


def worker_threads() -> list[str]:
    """Names of the live threads prep or the tracker started."""
    names = [t.name for t in threading.enumerate()]
    return [n for n in names if n.startswith(("lsp-prep-beside", "face-mesh-mirror"))]


# ------------------------------------------------------------------ Face Mesh's two graphs


def test_mirror_graph_beside_gives_the_same_points(media):
    """On 40 real frames the tracker with its mirror graph on a worker thread returns
    exactly the points of the one that runs both graphs in turn (the same images reach
    the same graphs in the same order), and closing it ends the worker."""
    info = probe(media["single_face"])
    frames = list(
        islice(iter_frames(media["single_face"], fps=30, size=(info.width, info.height)), 40)
    )
    got = {}
    for concurrent in (False, True):
        with quiet_native_stderr(), FaceMeshTracker(TrackConfig(), concurrent=concurrent) as t:
            got[concurrent] = [t(f) for f in frames]
            if concurrent:
                assert worker_threads() == ["face-mesh-mirror_0"]
    assert not worker_threads()
    assert all(p is not None for p in got[False])
    for a, b in zip(got[False], got[True], strict=True):
        assert np.array_equal(a, b)


# ------------------------------------------------------------------ Beside


def test_beside_runs_tasks_in_order_on_one_worker_and_raises_their_errors():
    timings: dict[str, float] = {}
    order: list[tuple[str, str]] = []

    def task(name: str) -> str:
        order.append((name, threading.current_thread().name))
        if name == "bad":
            raise ValueError("bad task")
        return name.upper()

    with pipeline.Beside(timings) as beside:
        a, bad, b = (beside.submit(n, task, n) for n in ("a", "bad", "b"))
        assert (a.result(), b.result()) == ("A", "B")
        with pytest.raises(ValueError, match="bad task"):
            bad.result()
    assert [n for n, _ in order] == ["a", "bad", "b"]
    assert {t for _, t in order} == {"lsp-prep-beside_0"}
    assert set(timings) == {"a (beside)", "bad (beside)", "b (beside)"}
    assert not worker_threads()


def test_beside_unthreaded_runs_at_once_on_the_caller():
    ran: list[str] = []
    with pipeline.Beside({}, threaded=False) as beside:
        f = beside.submit("x", lambda: ran.append(threading.current_thread().name) or 7)
        assert ran == [threading.current_thread().name] and f.result() == 7
        g = beside.submit("y", lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            g.result()


def test_leaving_beside_stops_a_long_task_and_waits_for_it():
    """An error on the main line sets ``stop``; a task that checks it between frames ends
    with CancelledError, and no worker thread is left."""
    ended: list[str] = []
    started = threading.Event()

    def frames(stop: threading.Event) -> None:
        try:
            for _ in range(10_000):
                started.set()
                if stop.is_set():
                    raise CancelledError("stopped")
                stop.wait(0.01)
        except CancelledError:
            ended.append("cancelled")
            raise
        ended.append("finished")

    with pytest.raises(KeyboardInterrupt):
        with pipeline.Beside({}) as beside:
            beside.submit("long", frames, beside.stop)
            assert started.wait(10)
            raise KeyboardInterrupt
    assert ended == ["cancelled"] and not worker_threads()


# ------------------------------------------------------------------ whole prep


@pytest.fixture(scope="module")
def clip(short_clip: Path) -> Path:
    """The short real clip (conftest.short_clip)."""
    return short_clip


@pytest.fixture(scope="module")
def reference(clip, tmp_path_factory) -> dict[str, object]:
    """Every array and attribute of the clip prepped with both cores busy, uninterrupted."""
    out = tmp_path_factory.mktemp("reference")
    result = pipeline.prep_video(clip, out_dir=out, config=FEWER)
    assert {"geometry (beside)", "shoulders (beside)"} <= set(result.timings)
    return h5_content(result.dataset)


@pytest.mark.slow
def test_concurrent_prep_equals_serial(clip, reference, tmp_path, monkeypatch):
    """All on one thread, the dataset is the same, array for array and attribute for
    attribute (the tracks, poses, crops' JPEG bytes, shoulders, mel, ...)."""
    threads: list[str] = []
    real = pipeline.track_shoulders

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "track_shoulders", spy)
    result = pipeline.prep_video(clip, out_dir=tmp_path, config=FEWER, concurrent=False)
    assert threads == [threading.current_thread().name]
    assert_same_content(h5_content(result.dataset), reference)


@pytest.mark.slow
def test_ctrl_c_while_the_shoulders_track_beside_stops_both_and_resumes(
    clip, reference, tmp_path, monkeypatch
):
    """Ctrl-C lands on the main line (in the features stage) while the worker is halfway
    through the shoulders' tracking: the worker stops at its next frame, no thread is
    left, nothing sits under the dataset's final name, the shoulders' cache is not
    written, and the same call then resumes to exactly the uninterrupted dataset."""
    seen: dict[str, object] = {}
    halfway = threading.Event()
    real = pipeline.track_shoulders

    def spy(*args, stop, **kwargs):
        seen["stop"], seen["thread"] = stop, threading.current_thread().name
        try:
            return real(*args, stop=stop, **kwargs)
        except BaseException as exc:
            seen["ended"] = type(exc).__name__
            raise

    def progress(stage: str, done: int, total: int | None) -> None:
        if seen.get("resumed"):
            return
        if stage == "shoulders" and total and done < total:  # on the worker
            halfway.set()
            seen["stop"].wait(60)  # type: ignore[attr-defined]  # until the main line unwinds
        if stage == "features" and done > 0:
            assert halfway.wait(60)
            raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "track_shoulders", spy)
    with pytest.raises(KeyboardInterrupt):
        pipeline.prep_video(clip, out_dir=tmp_path, config=FEWER, progress=progress)
    assert seen["ended"] == "CancelledError"
    assert str(seen["thread"]).startswith("lsp-prep-beside") and not worker_threads()
    caches = tmp_path / ".lsp-cache" / "clip"
    assert sorted(p.name for p in caches.iterdir()) == ["geometry.npz", "track.npz"]
    assert not (tmp_path / "clip.h5").exists() and (tmp_path / "clip.h5.partial").exists()
    seen["resumed"] = True
    result = pipeline.prep_video(clip, out_dir=tmp_path, config=FEWER, progress=progress)
    assert_same_content(h5_content(result.dataset), reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.h5", "manifest.csv"]


@pytest.mark.slow
def test_ctrl_c_on_the_worker_reaches_the_caller(clip, tmp_path):
    """A KeyboardInterrupt raised on the worker (the CLI's progress callback raises it on
    whichever thread reports next after a signal) stops prep the same way."""

    def progress(stage: str, done: int, total: int | None) -> None:
        if stage == "shoulders":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.prep_video(clip, out_dir=tmp_path, config=FEWER, progress=progress)
    assert not worker_threads() and not (tmp_path / "clip.h5").exists()
    assert not (tmp_path / ".lsp-cache" / "clip" / "shoulders.npz").exists()
