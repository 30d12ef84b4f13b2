"""Face Mesh averaged with its mirror image (track.mirror_average, issue 11): the
left-right correspondence it relies on, checked against the layout and against Face Mesh
itself on real frames, and the self-consistency it buys: a real clip and its mirror image
give mirror-image landmarks and head rotations."""

from __future__ import annotations

from itertools import islice

import h5py
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lsp_prep.layout import load_layout, mesh_mirror
from lsp_prep.media import iter_frames, probe
from lsp_prep.stages.track import FaceMeshTracker, TrackConfig, quiet_native_stderr

MIDLINE = (0, 1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 94, 151, 152)
"""Face Mesh points on the face's midline (nose, lips' centres, chin, forehead)."""


def test_mirror_is_an_involution_that_swaps_the_layouts_sides():
    m = mesh_mirror()
    assert np.array_equal(m[m], np.arange(478))
    assert np.array_equal(m[list(MIDLINE)], MIDLINE)
    layout = load_layout()
    group = {name: layout.mediapipe_index[list(idx)] for name, idx in layout.groups.items()}
    assert np.array_equal(m[group["right_brow"]], group["left_brow"])
    assert np.array_equal(m[group["contour"]], group["contour"][::-1])  # ear -> chin -> ear
    assert m[468] == 473  # iris centres


def _frames(media, count: int, flip: bool) -> list[np.ndarray]:
    info = probe(media["single_face"])
    frames = iter_frames(media["single_face"], fps=30, size=(info.width, info.height))
    return [np.ascontiguousarray(f[:, ::-1]) if flip else f for f in islice(frames, count)]


def _track(frames: list[np.ndarray], *, mirror_average: bool) -> np.ndarray:
    with quiet_native_stderr(), FaceMeshTracker(TrackConfig(mirror_average=mirror_average)) as t:
        pts = [t(f) for f in frames]
    assert all(p is not None for p in pts)
    return np.stack(pts)[..., :2]


def _unmirror(points: np.ndarray, width: int, perm: np.ndarray) -> np.ndarray:
    out = points[:, perm].copy()
    out[..., 0] = width - 1 - out[..., 0]
    return out


def test_face_mesh_on_mirrored_real_frames_matches_through_the_mirror(media):
    """Plain Face Mesh on 30 real frames and on their mirror images: relabelled by the
    correspondence, every point lands within 3.5 px of its partner on average (measured
    2.2 px at most, face 150 px wide); one swapped pair of neighbouring mouth points would
    be 7.6 px off, and no relabelling at all 55 px (median)."""
    width = probe(media["single_face"]).width
    a = _track(_frames(media, 40, False), mirror_average=False)[10:]
    b = _track(_frames(media, 40, True), mirror_average=False)[10:]
    per_point = np.linalg.norm(a - _unmirror(b, width, mesh_mirror()), axis=-1).mean(0)
    assert per_point.max() < 3.5, np.argsort(per_point)[-5:]
    plain = np.linalg.norm(a - _unmirror(b, width, np.arange(478)), axis=-1).mean(0)
    assert np.median(plain) > 20


def test_mirror_averaged_tracker_is_mirror_equivariant(media):
    """Averaged, a frame and its mirror image give mirror-image points once the first
    detections have settled (measured: under 0.12 px from the 8th frame, 0.03 median);
    plain Face Mesh is 1 px apart (median) and up to 5."""
    width = probe(media["single_face"]).width
    gaps = {}
    for average in (True, False):
        a = _track(_frames(media, 30, False), mirror_average=average)[10:]
        b = _track(_frames(media, 30, True), mirror_average=average)[10:]
        gaps[average] = np.linalg.norm(a - _unmirror(b, width, mesh_mirror()), axis=-1)
    assert np.median(gaps[True]) < 0.06 and gaps[True].max() < 0.3
    assert np.median(gaps[False]) > 0.5


@pytest.mark.slow
def test_real_clip_and_its_mirror_give_mirror_image_rotations(media, tmp_path, cut_clip):
    """Prep (landmark track) of 6 s of a real clip and of its mirror image: the rotations
    are mirror images of each other after one fixed change of object frame, within 1 degree
    median (measured 0.27, p90 0.51; with track.mirror_average=false 13.9)."""
    from lsp_prep.config import PrepConfig
    from lsp_prep.pipeline import prep_video

    clip = cut_clip(media["single_face"], 6.0)
    mirrored = cut_clip(media["single_face"], 6.0, name="mirror.mp4", extra=("-vf", "hflip"))
    config = PrepConfig().with_overrides(["features.enabled=false"])
    rot = {}
    for name, video in (("clip", clip), ("mirror", mirrored)):
        ds = prep_video(video, out_dir=tmp_path / "out", config=config, name=name).dataset
        with h5py.File(ds) as f:
            rot[name] = f["track/rotation"][:].astype(np.float64)
            valid = f["landmarks/valid"][:]
    flip = np.diag([-1.0, 1.0, 1.0])
    a = Rotation.from_matrix(flip @ Rotation.from_rotvec(rot["clip"]).as_matrix() @ flip)
    b = Rotation.from_rotvec(rot["mirror"])
    change = (a.inv() * b).mean()
    err = np.degrees(((a * change).inv() * b).magnitude())[valid]
    assert np.median(err) < 1.0, (np.median(err), np.percentile(err, 90))


def _mirror_gap(rot_clip: np.ndarray, rot_mirror: np.ndarray) -> np.ndarray:
    """Degrees between the mirror image of ``rot_clip`` and ``rot_mirror`` (N, 3) after one
    fixed change of object frame."""
    flip = np.diag([-1.0, 1.0, 1.0])
    a = Rotation.from_matrix(flip @ Rotation.from_rotvec(rot_clip).as_matrix() @ flip)
    b = Rotation.from_rotvec(rot_mirror)
    change = (a.inv() * b).mean()
    return np.degrees(((a * change).inv() * b).magnitude())


@pytest.mark.slow
def test_real_expressive_clip_and_its_mirror_keep_their_landmark_tracks(media, tmp_path, cut_clip):
    """5 s of a real expressive clip (pexels) and its mirror image, prepped as shipped. Neither
    clip's landmarks identify the focal length (95 % intervals 185-3661 and 185-4576 px,
    open towards short focal lengths): both use the default 615 px. Neither clip's texture
    features bound f (the clip's 95 % interval is the whole searched range, 185-4576 px):
    refused (GateConfig.require_focal). While a 3 % contrast on the curve decided that, the
    clip's features counted as bounding f and were refused later, their head turning 2.8x as
    far as the landmarks' on pitch (GateConfig.max_spread); the mirror image's were refused
    by require_focal then too. So both keep their landmark tracks, prep says why, and they
    are mirror images within issue 11's 2 degrees: measured 1.05, p90 1.80. Before the focal
    interval the contrast rule took the landmarks to fix f at 446 and 373 px for the clip
    and its mirror image; the clip's features were then refused by require_focal, the
    mirror's (347 px, turning 2-2.7x) by max_spread (accepted, the two tracks were 9.7
    degrees apart), and the landmark tracks were 1.39 degrees apart (p90 2.25)."""
    from lsp_prep.pipeline import prep_video

    clip = cut_clip(media["pexels"], 5.0, start=6.0)
    mirrored = cut_clip(media["pexels"], 5.0, start=6.0, name="mirror.mp4", extra=("-vf", "hflip"))
    rot, valid = {}, {}
    for name, video, why in (
        ("clip", clip, "do not fix the focal length"),
        ("mirror", mirrored, "do not fix the focal length"),
    ):
        result = prep_video(video, out_dir=tmp_path / "out", audio=media["speech"], name=name)
        with h5py.File(result.dataset) as f:
            source, n_features = f["track/source"][:], f["track/n_features"][:]
            rot[name], valid[name] = f["track/rotation"][:], f["landmarks/valid"][:]
        said = [w for w in result.warnings if why in w]
        assert len(said) == 1 and "head poses come from the landmarks alone" in said[0]
        assert not source.any() and not n_features.any()
    v = valid["clip"] & valid["mirror"]
    gap = _mirror_gap(rot["clip"][v], rot["mirror"][v])
    assert np.median(gap) < 2.0, (np.median(gap), np.percentile(gap, 90))
