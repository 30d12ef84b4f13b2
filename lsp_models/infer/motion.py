"""Animation post-processing on arrays: Gaussian smoothing in time with a bounded look-ahead
(offline and streaming give the same numbers), amplification, replayed landmark tracks, the
animated camera (crop boxes placed by prep's policy) and the shoulder billboard.

Everything here is numpy; frames are on the first axis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lsp_models.infer.config import AnimateConfig
from lsp_prep.camera import boxes_at, keep_inside, project
from lsp_prep.constants import FPS
from lsp_prep.errors import InputError
from lsp_prep.featuremap import face_points2d
from lsp_prep.stages.crop import CropConfig


def gaussian_weights(sigma: float, *, truncate: float = 4.0, ahead: int | None = None) -> tuple:
    """Taps of a Gaussian FIR over offsets ``-back .. ahead`` (normalised to sum 1).

    ``back = int(truncate * sigma + 0.5)`` as scipy's ``gaussian_filter1d``; ``ahead``
    defaults to ``back`` (symmetric: the same filter as scipy's). Returns (weights, back,
    ahead); ``sigma == 0`` is the identity (one tap).
    """
    if sigma < 0:
        raise InputError(f"smoothing sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return np.ones(1), 0, 0
    back = int(truncate * sigma + 0.5)
    ahead = back if ahead is None else max(0, min(int(ahead), back))
    k = np.arange(-back, ahead + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / sigma) ** 2)
    return w / w.sum(), back, ahead


def smooth(x: np.ndarray, sigma: float, *, truncate: float = 4.0, ahead: int | None = None):
    """Gaussian smoothing of ``x`` (N, ...) along time, edges replicated ("nearest").

    With ``ahead=None`` this is ``scipy.ndimage.gaussian_filter1d(x, sigma, axis=0,
    mode="nearest", truncate=truncate)``; a smaller ``ahead`` bounds the look-ahead to that
    many frames (the kernel's past side is kept whole), which :class:`StreamSmoother`
    reproduces chunk by chunk.
    """
    x = np.asarray(x, np.float64)
    w, back, ahead = gaussian_weights(sigma, truncate=truncate, ahead=ahead)
    if len(x) == 0 or len(w) == 1:
        return x.copy()
    xp = np.concatenate([np.repeat(x[:1], back, 0), x, np.repeat(x[-1:], ahead, 0)])
    return _fir(xp, w, len(x))


def _fir(xp: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    """out[i] = sum_k w[k] xp[i + k] for i < n; xp (n + len(w) - 1, ...)."""
    out = np.zeros((n, *xp.shape[1:]), np.float64)
    for k, wk in enumerate(w):  # few taps, many frames: one vector op per tap
        out += wk * xp[k : k + n]
    return out


class StreamSmoother:
    """:func:`smooth` computed incrementally: ``push(x (T, ...))`` returns the frames whose
    look-ahead is complete, ``finish()`` the rest (the last frame replicated)."""

    def __init__(self, sigma: float, *, truncate: float = 4.0, ahead: int | None = None):
        self.w, self.back, self.ahead = gaussian_weights(sigma, truncate=truncate, ahead=ahead)
        self._buf: np.ndarray | None = None  # inputs from frame self._buf_start on
        self._buf_start = 0
        self._seen = 0  # inputs received
        self._done = 0  # outputs produced

    def push(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if len(x) == 0:
            return np.zeros((0, *x.shape[1:]))
        if self._buf is None:  # left edge: the first frame replicated back
            self._buf = np.repeat(x[:1], self.back, 0)
            self._buf_start = -self.back
        self._buf = np.concatenate([self._buf, x])
        self._seen += len(x)
        return self._emit(self._seen - self.ahead)

    def finish(self) -> np.ndarray:
        if self._buf is None:
            return np.zeros((0,))
        self._buf = np.concatenate([self._buf, np.repeat(self._buf[-1:], self.ahead, 0)])
        return self._emit(self._seen)

    def _emit(self, upto: int) -> np.ndarray:
        """Outputs self._done .. upto - 1."""
        assert self._buf is not None
        n = upto - self._done
        if n <= 0:
            return np.zeros((0, *self._buf.shape[1:]))
        lo = self._done - self.back - self._buf_start  # buffer row of out[done]'s first tap
        out = _fir(self._buf[lo : lo + n + len(self.w) - 1], self.w, n)
        self._done = upto
        keep = self._done - self.back - self._buf_start  # rows the next output still needs
        self._buf = self._buf[keep:]
        self._buf_start += keep
        return out


def smoothing(config: AnimateConfig, delay: int, camera_sigma: float) -> dict[str, dict]:
    """The Gaussian filters (``sigma``, ``truncate``, ``ahead`` for :func:`smooth`) of the
    mouth, rotation, translation and camera paths, with ``config.max_lookahead_s`` applied."""
    t = config.truncate
    cam_ahead = int(round(config.camera_lookahead_s * FPS))
    mouth_ahead = pose_ahead = None
    if config.max_lookahead_s is not None:
        budget = max(int(round(config.max_lookahead_s * FPS)), delay)
        mouth_ahead, pose_ahead = budget - delay, budget // 2
        cam_ahead = min(cam_ahead, budget - pose_ahead)
    return {
        "mouth": {"sigma": config.mouth_sigma, "truncate": t, "ahead": mouth_ahead},
        "rot": {"sigma": config.rot_sigma, "truncate": t, "ahead": pose_ahead},
        "trans": {"sigma": config.trans_sigma, "truncate": t, "ahead": pose_ahead},
        "camera": {"sigma": camera_sigma, "truncate": t, "ahead": cam_ahead},
    }


def smooth_pose(pose: np.ndarray, config: AnimateConfig, delay: int = 0) -> np.ndarray:
    """Poses (N, 6) (rotation, translation; any per-axis units) smoothed in time with
    animate's rotation and translation filters (``delay``: the mouth model's, which only
    ``config.max_lookahead_s`` uses)."""
    f = smoothing(config, delay, 0.0)
    return np.concatenate([smooth(pose[:, :3], **f["rot"]), smooth(pose[:, 3:], **f["trans"])], 1)


def pingpong(i: np.ndarray, start: int, length: int) -> np.ndarray:
    """Indices into a run ``start .. start + length - 1`` played forwards, then backwards, ...
    for frames ``i`` (so a replayed track never jumps)."""
    i = np.asarray(i, np.int64)
    if length <= 1:
        return np.full_like(i, start)
    period = 2 * (length - 1)
    j = i % period
    return start + np.where(j < length, j, period - j)


def longest_valid_run(valid: np.ndarray, frames: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of consecutive ``frames`` that are all valid."""
    frames = np.asarray(frames, np.int64)
    ok = frames[np.asarray(valid, bool)[frames]]
    if len(ok) == 0:
        raise InputError("the dataset's train split has no valid frame to replay landmarks from")
    breaks = np.flatnonzero(np.diff(ok) != 1)
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks + 1, [len(ok)]])
    best = int(np.argmax(ends - starts))
    return int(ok[starts[best]]), int(ends[best] - starts[best])


@dataclass(frozen=True)
class CameraRig:
    """How prep framed this person's crops, to frame the animated head the same way."""

    intrinsics: np.ndarray
    """(3, 3) K of the original video."""
    side: float
    """Crop box side in original pixels (fixed per clip)."""
    frame_size: tuple[int, int]
    """Original video (width, height)."""
    offset: np.ndarray
    """(2,) original pixels added to the centre of the projected LSP-73 bounding box to get
    the unsmoothed crop centre: prep's Face-Mesh-box centre minus the LSP-73 box centre
    (median over valid frames), plus ``crop.offset_y * side`` down."""
    crop: CropConfig
    image_size: int = 512
    """Side of the crops the intrinsics are expressed for."""


def face_centres(
    points3d: np.ndarray, rotation: np.ndarray, translation: np.ndarray, rig: CameraRig
) -> np.ndarray:
    """Unsmoothed crop centres (N, 2) in original pixels for heads at (R, T) whose object
    landmarks are ``points3d`` (N, 73, 3), by the rig's policy."""
    p = face_points2d(points3d, rotation, translation, rig.intrinsics)  # (N, 73, 2)
    return (p.min(axis=1) + p.max(axis=1)) / 2 + rig.offset


def place_boxes(centres: np.ndarray, rig: CameraRig) -> np.ndarray:
    """Smoothed centres (N, 2) -> crop boxes (N, 4), kept inside the frame like prep's."""
    c = np.array(centres, np.float64)
    side = rig.side
    if rig.crop.keep_inside:
        c = keep_inside(c, side, rig.frame_size)
    return boxes_at(c, side)


def shoulder_points2d(
    billboard3d: np.ndarray,
    translation: np.ndarray,
    reference: np.ndarray,
    intrinsics: np.ndarray,
    *,
    amount: float,
) -> np.ndarray:
    """Shoulder billboard (P, 3) moved by ``amount`` times the head translation (N, 3) minus
    its ``reference`` (3,), projected with per-frame K (N, 3, 3): (N, P, 2) pixels."""
    shift = amount * (np.asarray(translation, np.float64) - reference)  # (N, 3)
    pts = billboard3d[None].astype(np.float64) + shift[:, None]  # (N, P, 3)
    return project(pts, np.asarray(intrinsics, np.float64))
