"""Many clips in one ``lsp prep`` (lsp_prep/batch.py): inputs checked up front, colliding
names made unique, a bad clip failing alone, Ctrl-C stopping every worker, and a serial
resume, ``--jobs 2`` and Ray all giving the same datasets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from lsp_prep import cache
from lsp_prep.batch import dataset_names, plan_clips
from lsp_prep.config import PrepConfig
from lsp_prep.errors import InputError

REPO = Path(__file__).resolve().parents[1]
CLIP_S = 1.2
"""Seconds of each test clip: just over prep's 1 s minimum."""


def dataset_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of an HDF5 dataset by its name."""
    out: dict[str, np.ndarray] = {}
    with h5py.File(path) as f:
        f.visititems(lambda k, v: out.update({k: v[()]}) if isinstance(v, h5py.Dataset) else None)
    return out


def assert_same_dataset(a: Path, b: Path) -> None:
    """Equal arrays (JPEG bytes included) and equal root attributes but the source path."""
    x, y = dataset_arrays(a), dataset_arrays(b)
    assert x.keys() == y.keys()
    for k in x:
        if x[k].dtype == object:  # variable-length JPEG bytes per frame
            assert all(np.array_equal(p, q) for p, q in zip(x[k], y[k], strict=True)), k
        else:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    with h5py.File(a) as fa, h5py.File(b) as fb:
        skip = {"source_path"}
        assert {k: str(v) for k, v in fa.attrs.items() if k not in skip} == {
            k: str(v) for k, v in fb.attrs.items() if k not in skip
        }


# ----------------------------------------------------------------------------- fast


@pytest.mark.parametrize(
    ("paths", "names"),
    [
        (["a/clip.mp4", "b/talk.mp4"], ["clip", "talk"]),
        (["dir1/clip.mp4", "dir2/clip.mp4"], ["dir1_clip", "dir2_clip"]),
        (["a/x/clip.mp4", "b/x/clip.mp4", "c/y.mp4"], ["a_x_clip", "b_x_clip", "y"]),
        (["d/clip.mp4", "d/clip.mov"], ["clip_mp4", "clip_mov"]),
        (["p/Clip.mp4", "q/clip.mp4"], ["p_Clip", "q_clip"]),  # one name on a case-blind disk
    ],
)
def test_colliding_names_are_made_unique_from_folders(tmp_path, paths, names):
    videos = [tmp_path / p for p in paths]
    assert list(dataset_names(videos).values()) == names


def test_a_made_up_name_that_is_taken_is_refused(tmp_path):
    videos = [tmp_path / "a/clip.mp4", tmp_path / "b/clip.mp4", tmp_path / "x/a_clip.mp4"]
    with pytest.raises(InputError, match=r"would both be written as a_clip\.h5: rename one"):
        dataset_names(videos)


def test_missing_input_refuses_the_command_before_any_work(lsp, media, tmp_path):
    out = tmp_path / "out"
    r = lsp("prep", media["single_face"], tmp_path / "nope.mp4", "-o", out, "--jobs", 2)
    assert r.exit_code == 1, r.output
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.output
    text = " ".join(r.output.split())
    assert f"{tmp_path / 'nope.mp4'}: no such file - nothing was prepped: fix the path" in text
    assert not out.exists()  # not even the output directory


@pytest.mark.parametrize("jobs", [1, 2])
def test_when_every_clip_is_refused_nothing_is_made(lsp, media, tmp_path, jobs):
    zero = tmp_path / "zero.mp4"
    zero.touch()
    out = tmp_path / "out"
    r = lsp("prep", zero, media["carphone"], "-o", out, "--jobs", jobs)
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert f"failed: {zero}: not a video or audio file ffmpeg can read" in text
    assert f"failed: {media['carphone']}: has no audio stream; pass the speech" in text
    assert "error: 2 of 2 clips failed (listed above)" in text
    assert not out.exists()


def test_plan_sets_bad_files_aside_and_preps_a_repeated_file_once(media, tmp_path):
    zero = tmp_path / "zero.mp4"
    zero.touch()
    good = media["single_face"]
    plan = plan_clips([good, zero, good], out_dir=tmp_path / "out", config=PrepConfig())
    assert [j.name for j in plan.jobs] == ["single_face"]
    assert [(o.name, o.ok) for o in plan.refused] == [("zero", False)]
    assert plan.refused[0].error.startswith(f"{zero}: not a video or audio file ffmpeg can read")
    assert plan.notes == (f"{good} is the same file as {good}: prepped once",)
    assert plan.names == ("single_face", "zero")


# ----------------------------------------------------------------------------- slow


@pytest.fixture(scope="module")
def clips(media, tmp_path_factory) -> dict[str, Path]:
    """Two short real clips with the same file name in two folders and a third (different
    excerpts of single_face.mp4), and a zero-byte ``.mp4``."""
    from lsp_prep.media import run_ffmpeg

    root = tmp_path_factory.mktemp("clips")
    out: dict[str, Path] = {}
    for key, start in (("dir1", 0.0), ("dir2", 1.0), ("other", 0.5)):
        (root / key).mkdir()
        out[key] = root / key / ("other.mp4" if key == "other" else "clip.mp4")
        cut = ["-ss", str(start), "-i", str(media["single_face"]), "-t", str(CLIP_S)]
        run_ffmpeg(["-y", *cut, "-c:v", "libx264", "-pix_fmt", "yuv420p", str(out[key])])
    out["zero"] = root / "zero.mp4"
    out["zero"].touch()
    return out


@pytest.fixture(scope="module")
def jobs2(clips, tmp_path_factory):
    """``lsp prep dir1/clip.mp4 dir2/clip.mp4 zero.mp4 --jobs 2``: (result, output dir)."""
    from typer.testing import CliRunner

    from cli.main import app

    out = tmp_path_factory.mktemp("jobs2")
    args = [str(clips[k]) for k in ("dir1", "dir2", "zero")]
    return CliRunner().invoke(app, ["prep", *args, "-o", str(out), "--jobs", "2"]), out


@pytest.mark.slow
def test_a_bad_clip_fails_alone_and_the_summary_lists_it(jobs2, clips):
    r, out = jobs2
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    zero = f"{clips['zero']}: not a video or audio file ffmpeg can read"
    assert f"failed: {zero}" in text and "(the other clips go ahead)" in text  # up front
    assert text.count(f"failed: {zero}") == 2  # and again in the summary
    assert "error: 1 of 3 clips failed (listed above)" in text
    assert [ln.startswith("error:") for ln in r.output.splitlines()].count(True) == 1
    for name in ("dir1_clip.h5", "dir2_clip.h5"):
        assert f"{name} " in text and "written" in text
    assert "Traceback" not in r.output
    assert sorted(p.name for p in out.iterdir()) == ["dir1_clip.h5", "dir2_clip.h5", "manifest.csv"]


@pytest.mark.slow
def test_same_file_names_get_unique_datasets_and_one_manifest_row_each(jobs2, clips):
    from lsp_prep.media import sha256_file

    r, out = jobs2
    text = " ".join(r.output.split())
    assert (
        f"note: 2 clips are named clip: written as {clips['dir1']} -> dir1_clip.h5, "
        f"{clips['dir2']} -> dir2_clip.h5" in text
    )
    df = pd.read_csv(out / "manifest.csv").set_index("clip")
    assert sorted(df.index) == ["dir1_clip", "dir2_clip"]
    for key in ("dir1", "dir2"):  # neither overwrote the other
        dataset = out / f"{key}_clip.h5"
        with h5py.File(dataset) as f:
            assert f.attrs["source_sha256"] == sha256_file(clips[key])
        assert df.loc[f"{key}_clip", "dataset_sha256"] == sha256_file(dataset)
        assert df.loc[f"{key}_clip", "source_sha256"] == sha256_file(clips[key])


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_the_rerun_resumes_to_the_same_datasets(
    jobs2, clips, tmp_path
):
    """Ctrl-C (SIGINT to the whole process group, as a terminal sends it) to a --jobs 2
    run once both clips are past tracking: exit 130, no traceback, no process left, nothing
    under a final name. The same command, serial this time, then finishes both clips from
    their caches: datasets identical to the uninterrupted --jobs 2 run's (so --jobs 2 gives
    the serial datasets, and resuming changes nothing)."""
    out = tmp_path / "out"
    args = [str(clips["dir1"]), str(clips["dir2"]), "-o", str(out), "--no-progress"]
    base = [sys.executable, "-m", "cli.main", "prep", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [*base, "--jobs", "2"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    tracked = [out / cache.CACHE_DIR / n / "track.npz" for n in ("dir1_clip", "dir2_clip")]
    deadline = time.monotonic() + 120
    while not all(p.exists() for p in tracked):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err  # after "interrupted"
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    for _ in range(100):  # the workers and the fork server are gone with the driver
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("worker processes outlived the interrupted prep")
    assert not list(out.glob("*.h5")) and not (out / "manifest.csv").exists()
    assert all(p.exists() for p in tracked)  # what the rerun resumes from

    serial = [*base, "--jobs", "1"]
    rerun = subprocess.run(serial, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    assert rerun.returncode == 0, rerun.stderr
    _, reference = jobs2
    for name in ("dir1_clip.h5", "dir2_clip.h5"):
        assert_same_dataset(reference / name, out / name)
    assert sorted(p.name for p in out.iterdir()) == ["dir1_clip.h5", "dir2_clip.h5", "manifest.csv"]


@pytest.mark.slow
def test_a_worker_that_dies_fails_its_clip_and_the_rest_go_on(clips, tmp_path):
    """SIGKILL to both workers once they have started their clips (as the kernel's OOM
    killer would): those two clips fail with a message, the clip still waiting runs on a
    new pool and is written, and the manifest lists only it."""
    import multiprocessing

    from lsp_prep.batch import prep_clips

    out = tmp_path / "out"
    videos = [clips["dir1"], clips["dir2"], clips["other"]]
    plan = plan_clips(videos, out_dir=out, config=PrepConfig())
    seen: set[str] = set()

    def kill_when_both_started(clip: str, stage: str, done: int, total: int | None) -> None:
        seen.add(clip)
        if seen == {"dir1_clip", "dir2_clip"}:
            seen.add("killed")
            for child in multiprocessing.active_children():
                os.kill(child.pid, signal.SIGKILL)

    outcomes = prep_clips(plan, out_dir=out, jobs=2, progress=kill_when_both_started)
    assert "killed" in seen
    by_name = {o.name: o for o in outcomes}
    assert list(by_name) == ["dir1_clip", "dir2_clip", "other"]
    for name, key in (("dir1_clip", "dir1"), ("dir2_clip", "dir2")):
        assert not by_name[name].ok
        assert by_name[name].error == (
            f"{clips[key]}: the worker process preparing it died (killed, or out of "
            "memory?): run the same command again to resume it"
        )
    assert by_name["other"].ok and (out / "other.h5").exists()
    assert list(pd.read_csv(out / "manifest.csv")["clip"]) == ["other"]


@pytest.mark.slow
def test_ray_executor_on_a_local_instance(lsp, jobs2, clips, tmp_path):
    """One Ray task per clip on a Ray instance started here: the bad clip fails alone, the
    dataset equals the local one, the driver writes the manifest, a rerun reuses."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "out"
        r = lsp("prep", clips["dir1"], clips["zero"], "-o", out, "--executor", "ray")
        assert r.exit_code == 1, r.output
        text = " ".join(r.output.split())
        assert f"failed: {clips['zero']}: not a video" in text
        assert "error: 1 of 2 clips failed" in text
        _, reference = jobs2
        assert_same_dataset(reference / "dir1_clip.h5", out / "clip.h5")
        assert list(pd.read_csv(out / "manifest.csv")["clip"]) == ["clip"]
        again = lsp("prep", clips["dir1"], "-o", out, "--executor", "ray")
        assert again.exit_code == 0, again.output
        assert "reused" in again.output
    finally:
        ray.shutdown()


def test_ray_executor_without_ray_says_how_to_install_it(lsp, clips_fast, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    r = lsp("prep", *clips_fast, "-o", tmp_path / "out", "--executor", "ray")
    assert r.exit_code == 1
    assert "the ray executor needs Ray: pip install 'lsp-toolkit[ray]'" in r.output
    assert not (tmp_path / "out").exists()


def test_ray_executor_without_a_cluster_says_how_to_start_one(lsp, media, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "out"
    r = lsp("prep", media["single_face"], "-o", out, "--executor", "ray", "--address", "auto")
    assert r.exit_code == 1, r.output
    text = " ".join(r.output.split())
    assert "error: no Ray cluster at --address auto" in text
    assert "start one with `ray start --head`, or use --address local" in text
    assert not out.exists()


@pytest.fixture
def clips_fast(media) -> list[Path]:
    return [media["single_face"], media["carphone"]]
