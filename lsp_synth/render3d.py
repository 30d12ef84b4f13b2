"""Synthetic 3D head clips with known camera, head pose and 3D landmarks.

A real face photo becomes a textured 3D mesh (:func:`lsp_synth.mesh.face_model`).
:func:`render_head_clip` moves that mesh by a known rigid pose every frame
(:class:`HeadMotion`), opens its mouth by a known amount driven by a speech envelope
(:func:`lsp_synth.audio.speech_envelope`), or moves jaw, lips and eyelids by the
documented speech-driven rule of :mod:`lsp_synth.speaker`, projects it with a known pinhole
:class:`~lsp_synth.pinhole.Camera`, paints it (:func:`lsp_synth.raster.render_head_frame`)
over a shoulder "billboard" (:mod:`lsp_synth.torso`: the torso of the same photo, a plane
facing the camera that follows half of the head's translation) and writes the clip
(:func:`lsp_synth.encode.write_clip`). :class:`Truth3D` holds what was rendered.

Conventions (the ones a calibration or tracking test compares against):

* **Object coordinates** of the head, in centimetres: x to image-right (the subject's
  left), y down, z away from the camera; the origin is the mean of the 468 face points of
  the rest mesh; outer eye corners (MediaPipe 33 and 263) are
  :data:`~lsp_prep.constants.EYE_DISTANCE_CM` apart.
* **Camera coordinates** are OpenCV's (x right, y down, z forward, centimetres):
  ``X_cam = R @ X_obj + T`` with ``R`` from the rotation vector (scipy
  ``Rotation.from_rotvec``), ``T`` in cm. With ``R = I`` the face looks into the camera
  as it looked into the photographer's.
* **Euler angles** (:func:`lsp_prep.camera.euler_yxz_to_rotvec`):
  ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)``
  (scipy intrinsic ``"YXZ"``), about the object axes. Positive yaw turns the nose towards
  image-left (the subject's right), positive pitch tilts the nose down, positive roll turns
  the face clockwise as displayed.
* **Image coordinates** are pixel centres at integers (OpenCV). The principal point is the
  image centre ``((w - 1) / 2, (h - 1) / 2)``; pixels are square.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsp_prep.camera import euler_yxz_to_rotvec
from lsp_prep.constants import N_MESH_POINTS, SAMPLE_RATE
from lsp_prep.errors import InputError
from lsp_synth.audio import speech_envelope
from lsp_synth.encode import frame_times, write_clip
from lsp_synth.expression import Expressions, Hand, paint_hand, skin_colour
from lsp_synth.layers import Background, composite, make_background
from lsp_synth.mesh import FaceModel
from lsp_synth.pinhole import Camera, rotation_matrices
from lsp_synth.raster import render_head_frame
from lsp_synth.speaker import MOUTH_PARAMS, SpeakerRule
from lsp_synth.torso import TorsoPlane, torso_plane


@dataclass(frozen=True)
class HeadMotion:
    """Rigid head motion as sinusoids; every component has its own random phase.

    At time ``t``: yaw, pitch, roll are ``amplitude * sin(2 pi f t + phase)`` degrees, and
    the translation is ``(base_xy_cm[0] + dx, base_xy_cm[1] + dy, distance_cm + dz)`` cm
    with ``dx, dy, dz`` sinusoids of ``shift_cm`` amplitude. Zero amplitudes hold still.
    """

    yaw_deg: float = 30.0
    """Amplitude of the rotation about the object y axis (degrees)."""
    pitch_deg: float = 20.0
    """Amplitude of the rotation about the object x axis (degrees)."""
    roll_deg: float = 8.0
    """Amplitude of the rotation about the object z axis (degrees)."""
    rotation_hz: tuple[float, float, float] = (0.33, 0.43, 0.19)
    """Frequencies of yaw, pitch and roll (Hz)."""
    shift_cm: tuple[float, float, float] = (3.0, 2.0, 4.0)
    """Amplitudes of the x, y, z translation (cm)."""
    shift_hz: tuple[float, float, float] = (0.23, 0.37, 0.13)
    """Frequencies of the x, y, z translation (Hz)."""
    distance_cm: float = 60.0
    """Base distance of the object origin from the camera along the optical axis (cm)."""
    base_xy_cm: tuple[float, float] = (0.0, 0.0)
    """Base x, y position of the object origin in camera coordinates (cm)."""
    seed: int = 0
    """Seed of the random phases."""

    def __post_init__(self) -> None:
        if len(self.rotation_hz) != 3 or len(self.shift_cm) != 3 or len(self.shift_hz) != 3:
            raise InputError("HeadMotion.rotation_hz, shift_cm and shift_hz take three values")
        if len(self.base_xy_cm) != 2:
            raise InputError("HeadMotion.base_xy_cm takes two values (x, y)")
        amps = (self.yaw_deg, self.pitch_deg, self.roll_deg, *self.shift_cm)
        if any(not np.isfinite(v) or v < 0 for v in (*amps, *self.rotation_hz, *self.shift_hz)):
            raise InputError(f"HeadMotion amplitudes and frequencies must be >= 0, got {self}")
        if max(self.yaw_deg, self.pitch_deg, self.roll_deg) >= 90:
            raise InputError("HeadMotion rotation amplitudes must be below 90 degrees")
        if not self.distance_cm > self.shift_cm[2] + 10.0:
            raise InputError(
                f"HeadMotion.distance_cm ({self.distance_cm}) must exceed the z amplitude "
                f"({self.shift_cm[2]}) by more than 10 cm, or the face reaches the camera"
            )

    @classmethod
    def still(cls, *, distance_cm: float = 60.0) -> HeadMotion:
        """A frontal head that does not move."""
        return cls(
            yaw_deg=0.0,
            pitch_deg=0.0,
            roll_deg=0.0,
            shift_cm=(0.0, 0.0, 0.0),
            distance_cm=distance_cm,
        )

    def euler_deg(self, times: np.ndarray) -> np.ndarray:
        """(yaw, pitch, roll) in degrees (N, 3) at ``times`` (N,) seconds."""
        t = np.asarray(times, dtype=np.float64).reshape(-1, 1)
        phase = np.random.default_rng(self.seed).uniform(0.0, 2 * np.pi, size=6)
        amp = np.array([self.yaw_deg, self.pitch_deg, self.roll_deg])
        return amp * np.sin(2 * np.pi * np.asarray(self.rotation_hz) * t + phase[:3])

    def poses(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rotvec (N, 3) radians, translation (N, 3) cm)`` at ``times`` (N,) seconds.

        ``X_cam = R(rotvec) @ X_obj + translation``; see
        :func:`lsp_prep.camera.euler_yxz_to_rotvec`.
        """
        t = np.asarray(times, dtype=np.float64).reshape(-1, 1)
        phase = np.random.default_rng(self.seed).uniform(0.0, 2 * np.pi, size=6)
        e = self.euler_deg(times)
        rotvec = euler_yxz_to_rotvec(e[:, 0], e[:, 1], e[:, 2], degrees=True)
        shift = np.asarray(self.shift_cm) * np.sin(
            2 * np.pi * np.asarray(self.shift_hz) * t + phase[3:]
        )
        base = np.array([self.base_xy_cm[0], self.base_xy_cm[1], self.distance_cm])
        return rotvec.reshape(-1, 3), base + shift


@dataclass(frozen=True, eq=False)
class Truth3D:
    """Ground truth of :func:`render_head_clip`, one entry per encoded frame."""

    fps: float
    """Frame rate of the clip."""
    size: tuple[int, int]
    """(width, height) of the clip in pixels."""
    K: np.ndarray
    """Intrinsic matrix (3, 3); principal point ``((w - 1) / 2, (h - 1) / 2)``."""
    focal: float
    """Focal length in pixels."""
    times: np.ndarray
    """Frame times (N,) in seconds: ``i / fps``."""
    rotation: np.ndarray
    """Head rotation vectors (N, 3) in radians: ``X_cam = R @ X_obj + T``."""
    translation: np.ndarray
    """Head translation (N, 3) in cm, camera coordinates."""
    euler_deg: np.ndarray
    """(yaw, pitch, roll) (N, 3) in degrees; see :func:`lsp_prep.camera.euler_yxz_to_rotvec`."""
    points_obj: np.ndarray
    """Deformed vertices (N, 478, 3) in object cm; index = MediaPipe index."""
    mouth_open: np.ndarray
    """Mouth opening envelope (N,) in [0, 1]; the jaw moved ``mouth_open_cm`` times this."""
    mouth_open_cm: float
    """Jaw displacement at ``mouth_open == 1`` (cm)."""
    shoulder_points2d: np.ndarray
    """Shoulder feature points (N, P, 2) in pixels, exact projections."""
    shoulder_points3d: np.ndarray
    """Shoulder feature points (N, P, 3) in camera cm."""
    shoulder_photo_px: np.ndarray
    """The shoulder feature points (P, 2) in photo pixels (the plane's texture)."""
    shoulder_affine: np.ndarray
    """Photo pixel -> frame pixel (N, 2, 3) of the shoulder plane, for any torso point:
    ``q = A[:, :2] @ p + A[:, 2]`` (NaN without shoulders)."""
    occluded: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    """(N,) bool: frames where a :class:`~lsp_synth.expression.Hand` covers face points
    (all False without a hand)."""
    mouth_params: np.ndarray = field(default_factory=lambda: np.zeros((0, len(MOUTH_PARAMS))))
    """(N, 4) the mouth parameters of :data:`lsp_synth.speaker.MOUTH_PARAMS` that moved
    the mesh: with a :class:`~lsp_synth.speaker.SpeakerRule` all four, otherwise the jaw
    (:attr:`mouth_open`) and zeros."""

    def __post_init__(self) -> None:
        n = len(self.times)
        shapes = {
            "rotation": (self.rotation.shape, (n, 3)),
            "translation": (self.translation.shape, (n, 3)),
            "points_obj": (self.points_obj.shape, (n, N_MESH_POINTS, 3)),
            "mouth_open": (self.mouth_open.shape, (n,)),
        }
        if self.occluded.shape == (0,):
            object.__setattr__(self, "occluded", np.zeros(n, bool))
        if len(self.mouth_params) == 0:
            params = np.zeros((n, len(MOUTH_PARAMS)))
            params[:, 0] = self.mouth_open
            object.__setattr__(self, "mouth_params", params)
        shapes["mouth_params"] = (self.mouth_params.shape, (n, len(MOUTH_PARAMS)))
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"{name} must be {want}, got {got}")

    @property
    def n_frames(self) -> int:
        """Number of frames N."""
        return len(self.times)

    @property
    def camera(self) -> Camera:
        """The :class:`Camera` of the clip."""
        return Camera(focal=self.focal, size=self.size)

    def points_cam(self) -> np.ndarray:
        """Deformed vertices in camera coordinates (N, 478, 3), cm."""
        r = rotation_matrices(self.rotation)  # (N, 3, 3)
        return np.einsum("nij,npj->npi", r, self.points_obj) + self.translation[:, None, :]

    def project_landmarks(self) -> np.ndarray:
        """Projected vertices (N, 478, 2) in pixels (pixel centres), visible or not."""
        return self.camera.project(self.points_cam())


def render_head_clip(
    path: Path,
    *,
    model: FaceModel,
    camera: Camera,
    duration_s: float,
    fps: float,
    motion: HeadMotion,
    audio: np.ndarray | None = None,
    sr: int = SAMPLE_RATE,
    mouth_open_cm: float = 1.2,
    speaker: SpeakerRule | None = None,
    expressions: Expressions | None = None,
    expression_gain: float = 1.0,
    hand: Hand | None = None,
    background: Background | np.ndarray = "texture",
    shoulders: bool = True,
    n_shoulder_points: int = 6,
    crf: int = 18,
    preset: str = "veryfast",
    progress: Callable[[int], None] | None = None,
) -> Truth3D:
    """Render ``model`` moving by ``motion`` under ``camera`` to an mp4; return its truth.

    The clip holds ``round(duration_s * fps)`` frames of ``camera.size``. ``audio`` (S,)
    mono float at ``sr`` drives the mouth through :func:`~lsp_synth.audio.speech_envelope`
    and is muxed as AAC, cut or zero-padded to the clip's length; without it the mouth stays
    at rest. With ``speaker`` the mouth and eyelids follow
    :class:`~lsp_synth.speaker.SpeakerRule` instead (jaw, lips, width and rounding from the
    audio, the mouth leading the sound; blinks), ``mouth_open_cm`` is unused, and the truth
    holds the rule's parameters. ``expressions`` (a real clip's face motion, see
    :mod:`lsp_synth.expression`) are added to the mesh every frame, times
    ``expression_gain``, on top of the jaw; the
    truth's pose stays the skull's. ``hand`` paints an occluder over the lower face, and
    the truth's ``occluded`` marks the frames it covers. ``background`` is a
    :func:`~lsp_synth.layers.make_background` kind or an RGB image (H, W, 3). With
    ``shoulders`` the torso plane (see :func:`~lsp_synth.torso.shoulder_placement`) is
    drawn first and ``n_shoulder_points`` of its corners are reported; otherwise the shoulder
    arrays are (N, 0, 2) and (N, 0, 3).
    """
    if not (np.isfinite(mouth_open_cm) and mouth_open_cm >= 0):
        raise InputError(f"mouth_open_cm must be >= 0, got {mouth_open_cm}")
    times = frame_times(duration_s=duration_s, fps=fps)
    n = len(times)
    bg = _background(background, camera=camera, seed=motion.seed)
    audio = _fit_audio(audio, n_samples=round(n / fps * sr))
    rotvec, trans = motion.poses(times)
    if speaker is None:
        env = speech_envelope(audio, sr=sr, fps=fps, n_frames=n)
        params = np.zeros((n, len(MOUTH_PARAMS)))
        params[:, 0] = env
        points_obj = model.deform(mouth_open_cm * env)
    else:
        params = speaker.params(audio, sr=sr, fps=fps, n_frames=n)
        env, mouth_open_cm = params[:, 0], speaker.jaw_cm
        points_obj = speaker.deform(model, params)
    if expressions is not None:
        points_obj += expressions.offsets_cm(
            times, rest=model.vertices, depth_scale=model.depth_scale, gain=expression_gain
        )
    torso = (
        _place_torso(model, camera, motion, rotvec, trans, points_obj, n_shoulder_points)
        if shoulders
        else None
    )
    occluded = np.zeros(n, bool)
    frames = _head_frames(bg, torso, model, camera, rotvec, trans, points_obj)
    if hand is not None:
        frames = _with_hand(frames, hand, times, model, camera, rotvec, trans, points_obj, occluded)
    write_clip(
        path,
        frames,
        fps=fps,
        size=camera.size,
        audio=audio,
        sr=sr,
        crf=crf,
        preset=preset,
        progress=progress,
    )
    sh3d = np.zeros((n, 0, 3)) if torso is None else torso.points3d
    return Truth3D(
        fps=float(fps),
        size=(int(camera.size[0]), int(camera.size[1])),
        K=camera.K,
        focal=float(camera.focal),
        times=times,
        rotation=rotvec,
        translation=trans,
        euler_deg=motion.euler_deg(times),
        points_obj=points_obj,
        mouth_open=env,
        mouth_open_cm=float(mouth_open_cm),
        shoulder_points2d=camera.project(sh3d) if sh3d.shape[1] else np.zeros((n, 0, 2)),
        shoulder_points3d=sh3d,
        shoulder_photo_px=np.zeros((0, 2)) if torso is None else torso.photo_px,
        shoulder_affine=np.full((n, 2, 3), np.nan) if torso is None else torso.affine,
        occluded=occluded,
        mouth_params=params,
    )


def _head_frames(
    background: np.ndarray,
    torso: TorsoPlane | None,
    model: FaceModel,
    camera: Camera,
    rotvec: np.ndarray,
    trans: np.ndarray,
    points_obj: np.ndarray,
) -> Iterator[np.ndarray]:
    """Yield the frames (H, W, 3): ``background``, the torso layer, then the posed head."""
    for i in range(len(rotvec)):
        frame = background.copy()
        if torso is not None:
            composite(frame, torso.layer, i)
        yield render_head_frame(
            frame,
            model=model,
            camera=camera,
            rotation=rotvec[i],
            translation=trans[i],
            points_obj=points_obj[i],
        )


def _with_hand(
    frames: Iterator[np.ndarray],
    hand: Hand,
    times: np.ndarray,
    model: FaceModel,
    camera: Camera,
    rotvec: np.ndarray,
    trans: np.ndarray,
    points_obj: np.ndarray,
    occluded: np.ndarray,
) -> Iterator[np.ndarray]:
    """``frames`` with ``hand`` painted over the face; sets ``occluded`` (N,) as it goes."""
    colour = hand.colour or skin_colour(model.texture, model.uv)
    sweep = hand.progress(times)
    r = rotation_matrices(rotvec)
    face2d = camera.project(np.einsum("nij,npj->npi", r, points_obj) + trans[:, None])
    for i, frame in enumerate(frames):
        if np.isfinite(sweep[i]):
            occluded[i] = paint_hand(frame, face2d[i], float(sweep[i]), hand=hand, colour=colour)
        yield frame


def _place_torso(
    model: FaceModel,
    camera: Camera,
    motion: HeadMotion,
    rotvec: np.ndarray,
    trans: np.ndarray,
    points_obj: np.ndarray,
    n_points: int,
) -> TorsoPlane:
    """The torso plane behind the head posed by ``rotvec``, ``trans`` (N, 3) and deformed
    to ``points_obj`` (N, 478, 3); its points stay clear of the projected head."""
    r = rotation_matrices(rotvec)
    face_cam = np.einsum("nij,npj->npi", r, model.with_skirt(points_obj)) + trans[:, None]
    return torso_plane(
        model=model,
        camera=camera,
        translation=trans,
        face2d=camera.project(face_cam),
        base_xy_cm=motion.base_xy_cm,
        distance_cm=motion.distance_cm,
        n_points=n_points,
    )


def _background(background: Background | np.ndarray, *, camera: Camera, seed: int) -> np.ndarray:
    """The clip's background (H, W, 3) uint8: an image of the camera's size, or made."""
    if isinstance(background, np.ndarray):
        bg = background
        if bg.shape != (camera.size[1], camera.size[0], 3) or bg.dtype != np.uint8:
            raise InputError(
                f"background must be (H, W, 3) uint8 of the camera size, got {bg.shape} {bg.dtype}"
            )
        return bg
    return make_background(size=camera.size, kind=background, seed=seed)


def _fit_audio(audio: np.ndarray | None, *, n_samples: int) -> np.ndarray | None:
    """Mono ``audio`` (S,) as float32, cut or zero-padded to ``n_samples``."""
    if audio is None:
        return None
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise InputError(f"audio must be mono (S,), got shape {audio.shape}")
    return np.pad(audio[:n_samples], (0, max(0, n_samples - len(audio))))
