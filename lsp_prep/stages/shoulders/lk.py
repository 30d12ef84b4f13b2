"""Tracking the upper-body points: forward-backward checked pyramidal Lucas-Kanade."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np

from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn
from lsp_prep.stages.shoulders.config import ShoulderConfig
from lsp_prep.stages.shoulders.image import inside, ncc, patches, to_gray


@dataclass(frozen=True, eq=False)
class ShoulderTracks:
    """The tracked points of a clip."""

    points2d: np.ndarray
    """(N, P, 2) float32 crop pixels; NaN where not valid."""
    valid: np.ndarray
    """(N, P) bool: tracked and passed every check on that frame."""
    init: np.ndarray
    """(P, 2) float32: the starting points on frame 0."""
    predicted: np.ndarray
    """(N, P, 2) float32: ``points2d`` where valid, elsewhere the position the valid points'
    motion (a similarity transform since the point was last valid) predicts, or its last
    valid position when no point is valid; may lie outside the image."""

    @property
    def n_frames(self) -> int:
        return int(self.valid.shape[0])


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """2x3 similarity taking (K, 2) ``src`` to ``dst``: fitted (LMedS) for K >= 3, the
    median translation for K = 1 or 2, None for K = 0."""
    if len(src) == 0:
        return None
    if len(src) >= 3:
        m, _ = cv2.estimateAffinePartial2D(
            src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS
        )
        if m is not None:
            return m.astype(np.float64)
    t = np.median(dst - src, axis=0)
    return np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]]])


def _apply(m: np.ndarray, p: np.ndarray) -> np.ndarray:
    return p @ m[:, :2].T + m[:, 2]


def _lk(
    prev: np.ndarray, cur: np.ndarray, p0: np.ndarray, guess: np.ndarray | None, params: dict
) -> tuple[np.ndarray, np.ndarray]:
    """One LK call on (K, 2) points, started at ``guess`` (K, 2) if given, else at ``p0``;
    returns positions (K, 2) and status (K,) bool."""
    start = p0 if guess is None else guess
    p0 = p0.astype(np.float32).reshape(-1, 1, 2)
    init = start.astype(np.float32).reshape(-1, 1, 2).copy()
    flags = 0 if guess is None else cv2.OPTFLOW_USE_INITIAL_FLOW
    p1, st, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, init, flags=flags, **params)
    return np.asarray(p1).reshape(-1, 2).astype(np.float64), np.asarray(st).reshape(-1) > 0


@dataclass(frozen=True, eq=False)
class _Frame:
    """A frame kept for LK: its index and grayscale image (H, W) uint8.

    (OpenCV's Python binding cannot take prebuilt pyramids, so LK builds them per call;
    at 512x512 a call costs about half a millisecond.)
    """

    index: int
    gray: np.ndarray


def track_points(
    frames: Iterable[np.ndarray],
    init: np.ndarray,
    *,
    config: ShoulderConfig = ShoulderConfig(),
    bgr: bool = False,
    total: int | None = None,
    progress: ProgressFn | None = None,
) -> ShoulderTracks:
    """Track ``init`` (P, 2) points of frame 0 through ``frames`` with pyramidal LK.

    ``frames`` is any iterable of (H, W, 3) uint8 images (RGB, or BGR with ``bgr``) or
    (H, W) grayscale, all the same size: a list, or a generator decoding JPEG frames from
    a dataset. Only the current frame, the previous one and, per lost point, the frame
    where it was last valid are kept, so memory does not grow with the clip.

    Each frame every valid point is tracked forward from the previous frame and back; it
    stays valid if both LK calls converge (status 1), the round trip ends within
    ``fb_max_px``, its window still matches the previous frame's (NCC >= ``min_ncc``) and
    it is at least ``edge_margin_px`` inside the image. A point that fails is invalid (NaN
    in ``points2d``) until, with ``reseed``, a direct LK from the frame where it was last
    valid, started at the position predicted by the other points' motion since then (a
    similarity fitted to the points valid on both frames), passes the same checks (its
    window compared with the old one warped by that similarity) and lands within
    ``reseed_max_px`` of the prediction.
    ``total`` (the number of frames, if known; else ``len(frames)`` when it has one) only
    feeds ``progress("shoulders", done, total)``. Returns :class:`ShoulderTracks` with
    ``points2d`` (N, P, 2), ``valid`` (N, P), ``init`` (P, 2) and ``predicted`` (N, P, 2).
    A lost point is retried every ``reseed_every`` frames.
    """
    init = np.asarray(init, np.float64)
    if init.ndim != 2 or init.shape[1] != 2 or len(init) == 0:
        raise InputError(f"init must be (P, 2) points with P >= 1, got shape {init.shape}")
    if not np.isfinite(init).all():
        raise InputError("init points must be finite")
    if total is None and hasattr(frames, "__len__"):
        total = len(frames)  # type: ignore[arg-type]
    n_pts = len(init)
    rows: list[np.ndarray] = []  # (P, 2) float32 per frame, NaN where invalid
    pred_rows: list[np.ndarray] = []
    valid_rows: list[np.ndarray] = []
    size = (0, 0)
    prev: _Frame | None = None
    # Per point: the frame it was last valid on (kept alive only while someone needs it)
    # and its position there.
    last: list[_Frame | None] = [None] * n_pts
    last_pos = init.copy()
    for t, frame in enumerate(frames):
        cur = _Frame(t, to_gray(frame, bgr=bgr))
        if t == 0:
            size = _first_size(cur.gray, init)
            pos, ok = init.copy(), inside(init, size, config.edge_margin_px)
            last = [cur] * n_pts
        else:
            assert prev is not None
            pos, ok = _forward(prev, cur, rows[-1], valid_rows[-1], config=config, size=size)
        pred = _reseed(cur, pos, ok, last, last_pos, rows, valid_rows, config=config, size=size)
        for i in np.flatnonzero(ok):
            last[i] = cur
            last_pos[i] = pos[i]
        pos[~ok] = np.nan
        rows.append(pos.astype(np.float32))
        pred_rows.append(pred.astype(np.float32))
        valid_rows.append(ok)
        prev = cur
        if progress is not None and (t + 1) % 30 == 0:
            progress("shoulders", t + 1, total)
    if not rows:
        raise InputError("no frames to track shoulder points on")
    if progress is not None:
        progress("shoulders", len(rows), len(rows))
    return ShoulderTracks(
        points2d=np.stack(rows),
        valid=np.stack(valid_rows),
        init=init.astype(np.float32),
        predicted=np.stack(pred_rows),
    )


def _first_size(gray: np.ndarray, init: np.ndarray) -> tuple[int, int]:
    """The (W, H) of the first frame, which every ``init`` point (P, 2) must lie in."""
    size = (gray.shape[1], gray.shape[0])
    outside = np.flatnonzero(~inside(init, size, 0.0))
    if len(outside):
        i = int(outside[0])
        raise InputError(
            f"init point {i} ({init[i, 0]:g}, {init[i, 1]:g}) lies outside the first "
            f"frame ({size[0]}x{size[1]})"
        )
    return size


def _forward(
    prev: _Frame,
    cur: _Frame,
    prev_pos: np.ndarray,
    prev_ok: np.ndarray,
    *,
    config: ShoulderConfig,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """The points valid on ``prev`` (positions (P, 2), mask (P,)) tracked into ``cur``:
    positions (P, 2), NaN where lost, and the mask of those that passed the checks."""
    gray = cur.gray
    if (gray.shape[1], gray.shape[0]) != size:
        raise InputError(
            f"frame {cur.index} is {gray.shape[1]}x{gray.shape[0]}, frame 0 was "
            f"{size[0]}x{size[1]}: all frames must have the same size"
        )
    n_pts = len(prev_ok)
    pos = np.full((n_pts, 2), np.nan)
    ok = np.zeros(n_pts, bool)
    alive = np.flatnonzero(prev_ok)
    if len(alive):
        p0 = prev_pos[alive].astype(np.float64)
        template = patches(prev.gray, p0, config.window)
        p1, ok1 = _check(prev, cur, p0, None, template, config=config, size=size)
        pos[alive[ok1]] = p1[ok1]
        ok[alive[ok1]] = True
    return pos, ok


def _reseed(
    cur: _Frame,
    pos: np.ndarray,
    ok: np.ndarray,
    last: list[_Frame | None],
    last_pos: np.ndarray,
    rows: list[np.ndarray],
    valid_rows: list[np.ndarray],
    *,
    config: ShoulderConfig,
    size: tuple[int, int],
) -> np.ndarray:
    """Predictions (P, 2) on ``cur`` of the points not valid there, from the motion of the
    valid ones since each was last valid; every ``reseed_every`` frames a lost point is
    looked for by a direct LK from that frame, and ``pos``/``ok`` take it when it passes."""
    t, n_pts = cur.index, len(ok)
    pred = pos.copy()
    motions: dict[int, np.ndarray | None] = {}
    for i in np.flatnonzero(~ok):
        ref = last[i]
        assert ref is not None
        if ref.index not in motions:
            both = ok & valid_rows[ref.index] if ref.index < t else np.zeros(n_pts, bool)
            motions[ref.index] = _similarity(rows[ref.index][both].astype(np.float64), pos[both])
        m = motions[ref.index]
        guess = last_pos[i] if m is None else _apply(m, last_pos[i][None])[0]
        pred[i] = guess
        if config.reseed and ref.index < t and (t - ref.index) % config.reseed_every == 0:
            linear = np.eye(2) if m is None else m[:, :2]
            template = _warped_patch(ref.gray, last_pos[i], linear, config.window)
            p1, good = _check(
                ref, cur, last_pos[i][None], guess[None], template, config=config, size=size
            )
            near = m is None or np.hypot(*(p1[0] - guess)) <= config.reseed_max_px
            if good[0] and near:
                pos[i] = pred[i] = p1[0]
                ok[i] = True
    return pred


def _warped_patch(gray: np.ndarray, centre: np.ndarray, linear: np.ndarray, window: int):
    """(1, window, window) float32 window of ``gray`` around ``centre`` (2,) as it looks
    after the 2x2 ``linear`` map (rotation and scale of the motion since): the window a
    re-seeded point is compared with."""
    c = (window - 1) / 2
    inv = np.linalg.inv(linear)
    m = np.hstack([inv, (centre - inv @ [c, c])[:, None]])
    out = cv2.warpAffine(
        gray,
        m,
        (window, window),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.astype(np.float32)[None]


def _check(
    src: _Frame,
    dst: _Frame,
    p0: np.ndarray,
    guess: np.ndarray | None,
    template: np.ndarray,
    *,
    config: ShoulderConfig,
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Forward-backward checked LK of (K, 2) points from ``src`` to ``dst``.

    Returns the positions (K, 2) in ``dst`` and (K,) bool: both LK calls converged, the
    round trip ends within ``fb_max_px`` of ``p0``, the point is inside the image, and its
    window in ``dst`` correlates with ``template`` (K, w, w) at least ``min_ncc``.
    """
    params = config.lk_params()
    p1, st1 = _lk(src.gray, dst.gray, p0, guess, params)
    back_guess = None if guess is None else p1 - (guess - p0)
    pb, st2 = _lk(dst.gray, src.gray, p1, back_guess, params)
    fb = np.linalg.norm(pb - p0, axis=1)
    ok = st1 & st2 & (fb <= config.fb_max_px) & np.isfinite(p1).all(axis=1)
    ok &= inside(np.nan_to_num(p1, nan=-1e9), size, config.edge_margin_px)
    if config.min_ncc > 0 and ok.any():
        score = ncc(patches(dst.gray, p1[ok], config.window), template[ok])
        ok[np.flatnonzero(ok)[score < config.min_ncc]] = False
    return p1, ok
