"""3D synthetic heads: the face model, the camera and pose conventions, and rendered clips
checked against their ground truth by MediaPipe Face Mesh and by template matching."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lsp_prep import camera
from lsp_prep.errors import InputError
from lsp_prep.layout import load_layout
from lsp_prep.media import iter_frames, load_audio, probe
from lsp_synth import audio, layers, pinhole, portraits, torso
from lsp_synth import mesh as synth_mesh
from lsp_synth import render3d as synth3d

SR = 16_000
FPS = 30
DURATION_S = 3.0
SIZE = (640, 360)
CAMERA = pinhole.Camera(focal=500.0, size=SIZE)
SMALL = synth3d.HeadMotion(
    yaw_deg=8.0, pitch_deg=5.0, roll_deg=3.0, shift_cm=(1.5, 1.0, 2.0), seed=1
)
FULL = synth3d.HeadMotion()  # +-30 degrees yaw, +-20 pitch, +-8 roll
SPEECH_START_S = 8.0
"""Three lively seconds of the speech sample (its first 5 s are near silence)."""


@dataclass(frozen=True, eq=False)
class Clip:
    path: Path
    truth: synth3d.Truth3D
    frames: np.ndarray  # (N, H, W, 3) decoded RGB


@pytest.fixture(scope="module")
def model(portrait: portraits.Portrait) -> synth_mesh.FaceModel:
    return synth_mesh.face_model(portrait.image)


@pytest.fixture(scope="module")
def speech(media) -> np.ndarray:
    y = load_audio(media["speech"], sr=SR)
    start = int(SPEECH_START_S * SR)
    return y[start : start + int(DURATION_S * SR)]


@pytest.fixture(scope="module")
def mesh() -> Callable[[np.ndarray], np.ndarray | None]:
    """Static-mode Face Mesh on a whole frame: RGB (H, W, 3) -> (478, 2) pixel centres."""
    mp = pytest.importorskip("mediapipe")
    fm = mp.solutions.face_mesh.FaceMesh(
        static_image_mode=True, max_num_faces=1, refine_landmarks=True
    )

    def run(rgb: np.ndarray) -> np.ndarray | None:
        res = fm.process(np.ascontiguousarray(rgb))
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = res.multi_face_landmarks[0].landmark
        return np.array([(p.x * w - 0.5, p.y * h - 0.5) for p in lm])

    yield run
    fm.close()


def _render(tmp_path_factory, name: str, **kwargs) -> Clip:
    path = tmp_path_factory.mktemp("synth3d") / f"{name}.mp4"
    truth = synth3d.render_head_clip(path, camera=CAMERA, duration_s=DURATION_S, fps=FPS, **kwargs)
    frames = np.stack(list(iter_frames(path, fps=FPS, size=SIZE)))
    return Clip(path=path, truth=truth, frames=frames)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory, model, speech) -> Clip:
    """Near-frontal motion, mouth driven by real speech."""
    return _render(tmp_path_factory, "small", model=model, motion=SMALL, audio=speech)


@pytest.fixture(scope="module")
def full_clip(tmp_path_factory, model) -> Clip:
    """The full default motion, no audio (mouth at rest)."""
    return _render(tmp_path_factory, "full", model=model, motion=FULL)


def _stable_mp() -> np.ndarray:
    layout = load_layout()
    return layout.mediapipe_index[list(layout.sets["stable"])]


# ----------------------------------------------------------------------------- the model


def test_model_scale_axes_and_triangles(model: synth_mesh.FaceModel) -> None:
    v = model.vertices
    assert v.shape == (478, 3) and model.uv.shape == (478, 2)
    assert np.linalg.norm(v[33] - v[263]) == pytest.approx(9.0, abs=1e-9)
    assert np.allclose(v[:468].mean(axis=0), 0.0, atol=1e-9)
    # x to image-right, y down, z away from the camera: the nose tip is nearest.
    assert v[263, 0] > v[33, 0] and v[152, 1] > v[10, 1] and v[1, 2] < v[234, 2]
    assert v[1, 2] <= np.percentile(v[:468, 2], 2)  # the nose tip is among the nearest
    for tri in (model.triangles, model.mouth_triangles):
        assert tri.dtype.kind == "i" and tri.ndim == 2 and tri.shape[1] == 3
        assert tri.min() >= 0 and tri.max() < 468
        assert (synth_mesh.twice_signed_area(model.uv[tri]) > 0).all()  # consistently oriented
    assert len(model.triangles) > 800 and len(model.mouth_triangles) > 5
    n_all = 478 + len(model.skirt_vertices)
    assert model.skirt_triangles.min() >= 0 and model.skirt_triangles.max() < n_all
    # uv are the photo's pixels and map linearly onto object x, y.
    back = model.vertices[:, :2] / model.cm_per_px + model.origin_px[:2]
    assert np.allclose(back, model.uv, atol=1e-9)


def test_no_triangle_covers_the_mouth_opening(model: synth_mesh.FaceModel) -> None:
    import cv2

    inner = model.uv[list(synth_mesh.LIPS_INNER)].astype(np.float32)
    lo, hi = inner.min(axis=0), inner.max(axis=0)
    grid = np.stack(np.meshgrid(*(np.linspace(a, b, 40) for a, b in zip(lo, hi, strict=True))), -1)
    grid = grid.reshape(-1, 2)
    # Points well inside the opening (1 px from the lips).
    probes = np.array(
        [q for q in grid if cv2.pointPolygonTest(inner, (float(q[0]), float(q[1])), True) > 1]
    )
    assert len(probes) > 20
    a, b, c = (model.uv[model.triangles[:, k]] for k in range(3))

    def side(p, q, r):  # (T, P) signed areas
        return (q[:, None, 0] - p[:, None, 0]) * (r[None, :, 1] - p[:, None, 1]) - (
            q[:, None, 1] - p[:, None, 1]
        ) * (r[None, :, 0] - p[:, None, 0])

    inside = (side(a, b, probes) > 0) & (side(b, c, probes) > 0) & (side(c, a, probes) > 0)
    assert not inside.any()


def test_jaw_weights(model: synth_mesh.FaceModel) -> None:
    w = model.lower_lip_jaw_weights
    assert w.min() >= 0 and w.max() <= 1
    assert (w[list(synth_mesh.LOWER_LIP)] == 1).all() and w[152] == pytest.approx(1.0)
    assert (w[list(synth_mesh.UPPER_LIP)] == 0).all()
    assert (w[_stable_mp()] < 0.05).all()  # rigid alignment points do not move
    assert w[[1, 33, 263, 468, 473]].max() == 0  # nose, eyes, pupils
    moved = model.deform(np.array([0.0, 1.0]))
    assert np.allclose(moved[0], model.vertices)
    assert moved[1, 14, 1] - model.vertices[14, 1] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- camera, pose


def test_camera_projection() -> None:
    cam = pinhole.Camera(focal=700.0, size=(641, 360))
    assert np.allclose(cam.project(np.array([0.0, 0.0, 55.0])), [320.0, 179.5])
    k = cam.K
    assert k.shape == (3, 3) and k[0, 0] == k[1, 1] == 700 and (k[0, 2], k[1, 2]) == (320, 179.5)
    x = np.random.default_rng(0).normal([0, 0, 60], [10, 10, 5], size=(2, 7, 3))
    h = x @ k.T
    assert np.allclose(cam.project(x), h[..., :2] / h[..., 2:])


def test_euler_convention(model: synth_mesh.FaceModel) -> None:
    nose = model.vertices[1] - model.vertices[:468].mean(axis=0)

    def turned(yaw=0.0, pitch=0.0, roll=0.0) -> np.ndarray:
        r = pinhole.rotation_matrices(camera.euler_yxz_to_rotvec(yaw, pitch, roll))[0]
        return r @ nose

    assert turned(yaw=20)[0] < nose[0] - 0.5  # nose to image-left (subject's right)
    assert turned(pitch=20)[1] > nose[1] + 0.5  # nose down
    # Roll: +90 degrees takes image-right (+x) to image-down (+y): clockwise as displayed.
    r = pinhole.rotation_matrices(camera.euler_yxz_to_rotvec(0, 0, 90))[0]
    assert np.allclose(r @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    angles = np.array([[25.0, -12.0, 5.0], [-30.0, 20.0, -8.0]])
    rv = camera.euler_yxz_to_rotvec(*angles.T)
    assert np.allclose(camera.rotvec_to_euler_yxz(rv), angles)


def test_head_motion_poses() -> None:
    t = np.arange(300) / 30
    rv, tr = FULL.poses(t)
    assert rv.shape == (300, 3) and tr.shape == (300, 3)
    e = camera.rotvec_to_euler_yxz(rv)
    assert np.allclose(e, FULL.euler_deg(t))
    assert (np.abs(e) <= [30 + 1e-9, 20 + 1e-9, 8 + 1e-9]).all()
    assert np.abs(e[:, 0]).max() > 29 and np.abs(e[:, 1]).max() > 19
    assert np.allclose(tr.mean(axis=0), [0, 0, 60], atol=2.5)
    rv2, tr2 = FULL.poses(t)
    assert np.array_equal(rv, rv2) and np.array_equal(tr, tr2)
    rv3, _ = synth3d.HeadMotion(seed=5).poses(t)
    assert not np.allclose(rv, rv3)
    still_rv, still_t = synth3d.HeadMotion.still().poses(t)
    assert np.allclose(still_rv, 0) and np.allclose(still_t, [0, 0, 60])


def test_speech_envelope(speech: np.ndarray) -> None:
    env = audio.speech_envelope(speech, sr=SR, fps=FPS, n_frames=90)
    assert env.shape == (90,) and env.min() == 0 and env.max() == 1
    assert np.allclose(audio.speech_envelope(None, fps=FPS, n_frames=5), 0)
    assert np.allclose(audio.speech_envelope(np.zeros(SR), sr=SR, fps=FPS, n_frames=30), 0)
    burst = np.zeros(SR)
    burst[SR // 2 : SR // 2 + 1600] = np.sin(np.arange(1600) * 0.3)
    env = audio.speech_envelope(burst, sr=SR, fps=FPS, n_frames=30)
    assert abs(int(np.argmax(env)) - 16) <= 1  # the burst is at 0.5-0.6 s


# ----------------------------------------------------------------------------- renders


@pytest.mark.slow
@pytest.mark.parametrize("which", ["small_clip", "full_clip"])
def test_clip_size_duration(which: str, request) -> None:
    clip: Clip = request.getfixturevalue(which)
    info = probe(clip.path)
    assert (info.width, info.height) == SIZE
    assert info.fps == pytest.approx(FPS)
    assert info.duration_s == pytest.approx(DURATION_S, abs=0.05)
    assert info.has_audio == (which == "small_clip")
    assert len(clip.frames) == clip.truth.n_frames == 90
    t = clip.truth
    assert t.size == SIZE and np.allclose(t.K, CAMERA.K) and t.focal == CAMERA.focal
    assert t.points_obj.shape == (90, 478, 3) and t.project_landmarks().shape == (90, 478, 2)


def _frame_error(clip: Clip, i: int, mesh) -> float:
    found = mesh(clip.frames[i])
    assert found is not None, f"Face Mesh finds no face in frame {i}"
    stable = _stable_mp()
    truth = clip.truth.project_landmarks()[i, stable]
    return float(np.median(np.linalg.norm(found[stable] - truth, axis=1)))


def test_render_is_what_truth_says_small_motion(small_clip: Clip, mesh) -> None:
    errors = [_frame_error(small_clip, i, mesh) for i in (0, 30, 60, 89)]
    assert max(errors) < 3.0, errors


@pytest.mark.parametrize("pose", ["frontal", "yaw25"])
def test_render_is_what_truth_says_full_motion(full_clip: Clip, mesh, pose: str) -> None:
    e = full_clip.truth.euler_deg
    if pose == "frontal":
        i = int(np.argmin(np.abs(e).max(axis=1)))
        assert np.abs(e[i]).max() < 10
    else:
        i = int(np.argmin(np.abs(np.abs(e[:, 0]) - 25)))
        assert abs(abs(e[i, 0]) - 25) < 2
    assert _frame_error(full_clip, i, mesh) < 3.0


def test_mouth_opening_follows_speech(small_clip: Clip, mesh) -> None:
    t = small_clip.truth
    assert t.mouth_open.min() < 0.05 and t.mouth_open.max() > 0.95
    # 20 frames spread over the range of openings.
    order = np.argsort(t.mouth_open, kind="stable")
    picks = order[np.linspace(0, len(order) - 1, 20).round().astype(int)]
    gaps = []
    for i in picks:
        found = mesh(small_clip.frames[i])
        assert found is not None
        gaps.append(np.linalg.norm(found[13] - found[14]))
    r = np.corrcoef(gaps, t.mouth_open[picks])[0, 1]
    assert r > 0.8, r
    # The truth moves the lower lip by mouth_open_cm * mouth_open.
    dy = t.points_obj[:, 14, 1] - t.points_obj[:, 13, 1]
    assert np.allclose(dy - dy.min(), t.mouth_open_cm * (t.mouth_open - t.mouth_open.min()))


def test_no_audio_keeps_the_mouth_at_rest(full_clip: Clip, model: synth_mesh.FaceModel) -> None:
    t = full_clip.truth
    assert np.allclose(t.mouth_open, 0) and np.allclose(t.points_obj, model.vertices)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["small_clip", "full_clip"])
def test_shoulder_points(which: str, request) -> None:
    clip: Clip = request.getfixturevalue(which)
    t = clip.truth
    motion = SMALL if which == "small_clip" else FULL
    p2, p3 = t.shoulder_points2d, t.shoulder_points3d
    assert p2.shape == (90, 6, 2) and p3.shape == (90, 6, 3)
    assert (p2 >= 0).all() and (p2[..., 0] <= SIZE[0] - 1).all()
    assert (p2[..., 1] <= SIZE[1] - 1).all()
    assert np.allclose(CAMERA.project(p3), p2)
    assert np.allclose(p3[..., 2], motion.distance_cm + torso.SHOULDER_GAP_CM)
    # The affine of the plane takes the photo points to the same places.
    a = t.shoulder_affine
    mapped = np.einsum("nij,pj->npi", a[:, :, :2], t.shoulder_photo_px) + a[:, None, :, 2]
    assert np.allclose(mapped, p2)
    # Shoulders follow half of the head's projected translation.
    head = CAMERA.project(t.translation)  # the object origin, (N, 2)
    dh = head - head.mean(axis=0)
    ds = (p2 - p2.mean(axis=0)).mean(axis=1)
    slope = (dh * ds).sum() / (dh * dh).sum()
    assert 0.4 < slope < 0.6, slope


def test_shoulder_texture_is_where_truth_says(small_clip: Clip, model) -> None:
    """Template-match each photo patch around a shoulder point in decoded frames."""
    import cv2

    t = small_clip.truth
    r = 7
    checked = 0
    for i in (0, 45, 89):
        frame = cv2.cvtColor(small_clip.frames[i], cv2.COLOR_RGB2GRAY).astype(np.float32)
        photo = cv2.cvtColor(model.texture, cv2.COLOR_RGB2GRAY).astype(np.float32)
        # Photo warped into the frame by the plane's affine, then patches cut at the truth.
        warped = cv2.warpAffine(photo, t.shoulder_affine[i], SIZE, flags=cv2.INTER_LINEAR)
        for q in t.shoulder_points2d[i]:
            x, y = np.round(q).astype(int)
            tpl = warped[y - r : y + r + 1, x - r : x + r + 1]
            s = 6  # search +-6 px
            win = frame[y - r - s : y + r + s + 1, x - r - s : x + r + s + 1]
            if tpl.shape != (2 * r + 1, 2 * r + 1) or win.shape != (2 * (r + s) + 1,) * 2:
                continue  # too close to the border for a full window
            res = cv2.matchTemplate(win, tpl, cv2.TM_CCOEFF_NORMED)
            dy, dx = np.unravel_index(np.argmax(res), res.shape)
            assert res.max() > 0.8
            assert abs(dx - s) <= 1 and abs(dy - s) <= 1, (i, q, dx - s, dy - s)
            checked += 1
    assert checked >= 15


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: pinhole.Camera(focal=0.0, size=SIZE), "focal"),
        (lambda: pinhole.Camera(focal=500.0, size=(1, 360)), "size"),
        (lambda: synth3d.HeadMotion(yaw_deg=-1.0), ">= 0"),
        (lambda: synth3d.HeadMotion(yaw_deg=95.0), "below 90"),
        (lambda: synth3d.HeadMotion(distance_cm=8.0), "distance_cm"),
        (lambda: synth3d.HeadMotion(shift_cm=(1.0, 2.0)), "three values"),
        (lambda: synth_mesh.face_model(np.zeros((64, 64), np.uint8)), "RGB image"),
        (lambda: synth_mesh.face_model(layers.make_background(size=(200, 200))), "no face"),
        (lambda: audio.speech_envelope(np.zeros((2, 10)), fps=30, n_frames=3), "mono"),
    ],
)
def test_bad_input(make, message: str) -> None:
    with pytest.raises(InputError, match=message):
        make()


def test_bad_render_input(tmp_path: Path, model: synth_mesh.FaceModel) -> None:
    kw = dict(model=model, camera=CAMERA, duration_s=0.2, fps=FPS, motion=SMALL)
    with pytest.raises(InputError, match="mono"):
        synth3d.render_head_clip(tmp_path / "a.mp4", audio=np.zeros((2, 100)), **kw)
    with pytest.raises(InputError, match="mouth_open_cm"):
        synth3d.render_head_clip(tmp_path / "b.mp4", mouth_open_cm=-1.0, **kw)
    with pytest.raises(InputError, match="background"):
        synth3d.render_head_clip(tmp_path / "c.mp4", background=np.zeros((5, 5, 3)), **kw)
    tiny = pinhole.Camera(focal=500.0, size=(64, 48))  # the torso never fits in view
    with pytest.raises(InputError, match="torso points"):
        synth3d.render_head_clip(tmp_path / "d.mp4", **{**kw, "camera": tiny})
    assert not list(tmp_path.iterdir())
