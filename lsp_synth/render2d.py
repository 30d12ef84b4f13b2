"""Synthetic test clips with known ground truth: a real photo moved by a known transform.

A portrait photo (by default the astronaut of :mod:`lsp_synth.samples`) is pasted with
soft edges onto a static background and moved every frame by a smooth similarity transform
(translation, in-plane roll, scale; sums of sinusoids, so frame timestamps matter). The
transform of every frame is returned as :class:`Truth`, which maps any photo point (for
example the face box the detector finds on the still photo) to where it lies in each frame.

Coordinates are pixel centres: pixel ``(x, y)`` of an image covers ``[x - 0.5, x + 0.5]``,
as in OpenCV's ``warpAffine``. All clip coordinates are *displayed* coordinates, i.e. after
any rotation metadata has been applied by the decoder.

Clips are written by :func:`lsp_synth.encode.write_clip` (see there for codecs and
rotation metadata); the photo layers are composited by :mod:`lsp_synth.layers`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsp_prep.constants import SAMPLE_RATE
from lsp_prep.errors import InputError
from lsp_synth.encode import frame_times, write_clip
from lsp_synth.layers import (
    Background,
    Layer,
    make_background,
    prescaled_layer,
    render_frames,
    soft_rgba,
)
from lsp_synth.portraits import Portrait, astronaut_portrait, check_rgb, stranger_portrait


@dataclass(frozen=True)
class Motion:
    """Head motion as sums of sinusoids; every component has its own random phase.

    At time ``t`` a photo point ``p`` goes to
    ``centre + s(t) * R(roll(t)) @ (p - anchor) + shift(t)`` where ``s(t) = base * (1 +
    scale * sin(...))``. Zero amplitudes give a still photo.
    """

    shift_px: tuple[float, float] = (24.0, 12.0)
    """Amplitude of the horizontal and vertical translation (clip pixels)."""
    shift_hz: tuple[float, float] = (0.23, 0.37)
    """Frequencies of the horizontal and vertical translation (Hz)."""
    roll_deg: float = 8.0
    """Amplitude of the in-plane rotation (degrees, counter-clockwise as displayed)."""
    roll_hz: float = 0.17
    """Frequency of the in-plane rotation (Hz)."""
    scale: float = 0.06
    """Relative amplitude of the scale change (0.06 = +-6 %); below 1."""
    scale_hz: float = 0.11
    """Frequency of the scale change (Hz)."""
    seed: int = 0
    """Seed of the random phases."""

    def __post_init__(self) -> None:
        amps = (*self.shift_px, self.roll_deg, self.scale)
        freqs = (*self.shift_hz, self.roll_hz, self.scale_hz)
        if len(self.shift_px) != 2 or len(self.shift_hz) != 2:
            raise InputError("Motion.shift_px and Motion.shift_hz take two values (x, y)")
        if any(not np.isfinite(v) or v < 0 for v in (*amps, *freqs)):
            raise InputError(f"Motion amplitudes and frequencies must be >= 0, got {self}")
        if self.scale >= 1:
            raise InputError(f"Motion.scale must be below 1, got {self.scale}")

    @classmethod
    def still(cls) -> Motion:
        """No motion at all."""
        return cls(shift_px=(0.0, 0.0), roll_deg=0.0, scale=0.0)

    def params(self, times: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Per-time ``(dx, dy, roll_deg, scale_factor)``, each (N,), for ``times`` (N,) in s."""
        t = np.asarray(times, dtype=np.float64)
        phase = np.random.default_rng(self.seed).uniform(0.0, 2 * np.pi, size=4)
        dx = self.shift_px[0] * np.sin(2 * np.pi * self.shift_hz[0] * t + phase[0])
        dy = self.shift_px[1] * np.sin(2 * np.pi * self.shift_hz[1] * t + phase[1])
        roll = self.roll_deg * np.sin(2 * np.pi * self.roll_hz * t + phase[2])
        scale = 1.0 + self.scale * np.sin(2 * np.pi * self.scale_hz * t + phase[3])
        return dx, dy, roll, scale


@dataclass(frozen=True, eq=False)
class Truth:
    """Ground truth of a rendered clip, one entry per encoded frame at the clip's fps."""

    times: np.ndarray
    """Presentation time of every frame in seconds, (N,): ``i / fps``."""
    affine: np.ndarray
    """Photo pixel -> displayed clip pixel, (N, 2, 3): ``q = A[:, :2] @ p + A[:, 2]``."""
    fps: float
    """Frame rate of the clip."""
    size: tuple[int, int]
    """Displayed (width, height) of the clip, after rotation metadata."""
    rotation: int = 0
    """Display rotation metadata written to the file (degrees, counter-clockwise)."""

    def __post_init__(self) -> None:
        n = len(self.times)
        if self.affine.shape != (n, 2, 3):
            raise ValueError(f"affine must be ({n}, 2, 3), got {self.affine.shape}")

    @property
    def n_frames(self) -> int:
        """Number of frames N."""
        return len(self.times)

    def map_points(self, points: np.ndarray) -> np.ndarray:
        """Map photo points (P, 2) (x, y) to clip points (N, P, 2) in every frame."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return np.einsum("nij,pj->npi", self.affine[:, :, :2], p) + self.affine[:, None, :, 2]

    def map_box(self, box: Sequence[float]) -> np.ndarray:
        """Axis-aligned box (N, 4) (x0, y0, x1, y1) around a photo box's mapped corners."""
        x0, y0, x1, y1 = box
        q = self.map_points(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]))  # (N, 4, 2)
        return np.concatenate([q.min(axis=1), q.max(axis=1)], axis=1)


@dataclass(frozen=True, eq=False)
class TwoFaces:
    """Ground truth of :func:`two_faces_clip`: the target is the face to track."""

    target: Truth
    """Transform of the target portrait (the large central face)."""
    distractor: Truth
    """Transform of the second, smaller face."""
    target_box: np.ndarray
    """Target face box per frame, (N, 4) (x0, y0, x1, y1) in clip pixels."""
    distractor_box: np.ndarray
    """Distractor face box per frame, (N, 4)."""


def motion_affines(
    *,
    times: np.ndarray,
    motion: Motion,
    anchor: tuple[float, float],
    centre: tuple[float, float],
    scale: float,
) -> np.ndarray:
    """Affines (N, 2, 3) taking photo point ``anchor`` to clip point ``centre`` (+ motion).

    ``times`` (N,) in seconds; ``scale`` is clip pixels per photo pixel at rest.
    """
    dx, dy, roll, s = motion.params(times)
    theta = np.deg2rad(roll)
    # Counter-clockwise as displayed: with y pointing down, x' = c x + s y, y' = -s x + c y.
    a = scale * s * np.cos(theta)
    b = scale * s * np.sin(theta)
    out = np.empty((len(times), 2, 3))
    out[:, 0, 0], out[:, 0, 1] = a, b
    out[:, 1, 0], out[:, 1, 1] = -b, a
    ax, ay = anchor
    out[:, 0, 2] = centre[0] + dx - (a * ax + b * ay)
    out[:, 1, 2] = centre[1] + dy - (-b * ax + a * ay)
    return out


def portrait_layer(
    image: np.ndarray,
    *,
    times: np.ndarray,
    motion: Motion,
    size: tuple[int, int],
    centre: tuple[float, float],
    scale: float,
    feather: float,
) -> tuple[np.ndarray, Layer]:
    """A photo resting at ``centre`` (fractions of ``size``), moving by ``motion``.

    Returns the photo -> clip affines (N, 2, 3) at ``times`` (N,) seconds and the layer
    that pastes the photo (border faded over ``feather`` times its shorter side), with
    ``scale`` clip pixels per photo pixel at rest.
    """
    image = check_rgb(image)
    w, h = size
    ih, iw = image.shape[:2]
    affine = motion_affines(
        times=times,
        motion=motion,
        anchor=((iw - 1) / 2, (ih - 1) / 2),
        centre=(centre[0] * w - 0.5, centre[1] * h - 0.5),
        scale=scale,
    )
    return affine, prescaled_layer(soft_rgba(image, feather=feather), affine)


def _composite_and_write(
    path: Path, *, layers: list, background: np.ndarray, n_frames: int, clip: dict
) -> None:
    """Composite ``layers`` over ``background`` for ``n_frames`` and encode them to ``path``
    (``clip``: :func:`~lsp_synth.encode.write_clip`'s keyword arguments)."""
    frames = render_frames(background=background, layers=layers, n_frames=n_frames)
    write_clip(path, frames, **clip)


def render_talking_clip(
    path: Path,
    *,
    image: np.ndarray,
    duration_s: float,
    fps: float,
    size: tuple[int, int] = (640, 360),
    motion: Motion = Motion(),
    audio: np.ndarray | None = None,
    sr: int = SAMPLE_RATE,
    face_scale: float = 1.0,
    centre: tuple[float, float] = (0.5, 0.5),
    background: Background = "texture",
    feather: float = 0.08,
    rotation_metadata: int = 0,
    crf: int = 18,
    preset: str = "veryfast",
    progress: Callable[[int], None] | None = None,
) -> Truth:
    """Render ``image`` (H, W, 3) RGB moving by ``motion`` over a background; return its truth.

    The photo's centre rests at ``centre`` (fractions of the displayed width and height)
    with ``face_scale`` clip pixels per photo pixel; its border fades out over ``feather``
    times its shorter side. ``size`` is the displayed (width, height); the clip holds
    ``round(duration_s * fps)`` frames. See :func:`write_clip` for ``audio``,
    ``rotation_metadata``, ``crf`` and ``preset``.
    """
    image = check_rgb(image)
    if not face_scale > 0:
        raise InputError(f"face_scale must be positive, got {face_scale}")
    times = frame_times(duration_s=duration_s, fps=fps)
    w, h = size
    affine, layer = portrait_layer(
        image,
        times=times,
        motion=motion,
        size=size,
        centre=centre,
        scale=face_scale,
        feather=feather,
    )
    _composite_and_write(
        path,
        layers=[layer],
        background=make_background(size=size, kind=background, seed=motion.seed),
        n_frames=len(times),
        clip=dict(
            fps=fps,
            size=size,
            audio=audio,
            sr=sr,
            rotation_metadata=rotation_metadata,
            crf=crf,
            preset=preset,
            progress=progress,
        ),
    )
    return Truth(times=times, affine=affine, fps=fps, size=(w, h), rotation=rotation_metadata)


def two_faces_clip(
    path: Path,
    *,
    duration_s: float,
    fps: float,
    size: tuple[int, int] = (640, 360),
    target: Portrait | None = None,
    distractor: Portrait | None = None,
    target_scale: float = 1.0,
    distractor_scale: float = 0.7,
    target_motion: Motion = Motion(),
    distractor_motion: Motion = Motion(
        shift_px=(28.0, 20.0), shift_hz=(0.31, 0.43), roll_deg=12.0, seed=1
    ),
    distractor_centre: tuple[float, float] = (0.86, 0.3),
    audio: np.ndarray | None = None,
    sr: int = SAMPLE_RATE,
    background: Background = "texture",
    feather: float = 0.08,
    rotation_metadata: int = 0,
    crf: int = 18,
    preset: str = "veryfast",
    progress: Callable[[int], None] | None = None,
) -> TwoFaces:
    """A large central target face and a smaller, differently moving second person.

    Defaults: the astronaut (:func:`astronaut_portrait`) centred at ``target_scale``, and a
    stranger (:func:`stranger_portrait`) resting at ``distractor_centre`` (fractions of the
    frame) at ``distractor_scale``; both in clip pixels per photo pixel. The target is drawn
    on top and may hide part of the distractor's photo. Returns both transforms and both
    face boxes per frame (displayed pixel centres); a tracker must report boxes that follow
    ``target_box`` in every frame. Other arguments as in :func:`render_talking_clip`.
    """
    target = target or astronaut_portrait()
    distractor = distractor or stranger_portrait()
    if not (target_scale > 0 and distractor_scale > 0):
        raise InputError("target_scale and distractor_scale must be positive")
    times = frame_times(duration_s=duration_s, fps=fps)
    w, h = size
    truths, layers = [], []
    for portrait, scale, motion, centre in (
        (distractor, distractor_scale, distractor_motion, distractor_centre),
        (target, target_scale, target_motion, (0.5, 0.5)),
    ):
        affine, layer = portrait_layer(
            portrait.image,
            times=times,
            motion=motion,
            size=size,
            centre=centre,
            scale=scale,
            feather=feather,
        )
        truths.append(
            Truth(times=times, affine=affine, fps=fps, size=(w, h), rotation=rotation_metadata)
        )
        layers.append(layer)
    _composite_and_write(
        path,
        layers=layers,
        background=make_background(size=size, kind=background, seed=target_motion.seed),
        n_frames=len(times),
        clip=dict(
            fps=fps,
            size=size,
            audio=audio,
            sr=sr,
            rotation_metadata=rotation_metadata,
            crf=crf,
            preset=preset,
            progress=progress,
        ),
    )
    other, main = truths
    return TwoFaces(
        target=main,
        distractor=other,
        target_box=main.map_box(target.face_box),
        distractor_box=other.map_box(distractor.face_box),
    )
