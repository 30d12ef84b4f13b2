"""Mouth targets: how the mouth-related points move in the head's frame, with the part that
head pose explains taken out.

The object-space landmarks (``track/points3d``) sit on the rays of the detected 2D points,
so the feature map the renderer learns lands exactly on them. As targets for the audio
model they carry the detector's pose-dependent artefacts: the jaw points slide along the
cheek silhouette as the head turns, and every error of the pose shifts the mouth. Measured
on a 30 s speech-driven render (astronaut head, jaw opened by the speech envelope, yaw
+-30 deg, pitch +-15 deg, 60 FPS dataset): head pose explains 58 % of the variance of
``pts[:, mouth] - mean`` and the speech only 26 %; on the 7 jaw points pose explains 66 %.
Face Mesh's own 3D mouth (similarity-aligned on the stable points, no rays) is worse:
pose 71 %, speech 15 %.

:func:`mouth_displacement` removes what head pose predicts of the displacements (a
polynomial of the Euler angles and translation, fitted per coordinate by a cross-validated
ridge, with the mouth's own opening as a control so that speech which happens to go with
the pose stays; see :func:`pose_fit`). On that render the speech then explains 61 % of
the variance and the true pose 6 %, and the inner-lip opening follows the truth as
before (correlation 0.92); the rest is detector noise (11 % of it above 10 Hz) and points
that do not move at all in that render (the upper lip). ``geometry.mouth_pose_terms``
chooses the polynomial or turns the fit off.
"""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np

from lsp_prep.camera import rotvec_to_euler_yxz
from lsp_prep.constants import FPS
from lsp_prep.layout import Layout

PoseTerms = Literal["off", "linear", "quadratic"]

FOLDS = 5
"""Contiguous blocks of the clip for the cross-validation that sets the fit's ridge."""

RIDGES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
"""Ridge strengths tried, per frame, on standardised regressors."""

MIN_SECONDS = 10.0
"""With fewer valid frames than this many seconds at the dataset's rate, nothing is removed:
a few seconds hold too few independent head poses to tell pose from speech (measured on
windows of a 30 s render: over 5 s the fit lowered the inner-lip opening's correlation
with the truth from 0.85 to 0.53; from 10 s on it cost at most 0.03 and doubled the share
of the variance the speech explains)."""

MIN_FRAMES = round(MIN_SECONDS * FPS)

ANGLE_SCALE_DEG = 20.0
TRANSLATION_SCALE_CM = 10.0


def pose_design(
    rotation: np.ndarray, translation: np.ndarray, valid: np.ndarray, *, terms: PoseTerms
) -> np.ndarray:
    """Regressors (N, K) of head pose: yaw, pitch, roll (degrees / 20) and translation
    (cm / 10), each centred on the valid frames' median; with ``"quadratic"`` also their
    products and squares of the three angles. ``K`` is 0 for ``"off"``."""
    if terms == "off":
        return np.zeros((len(valid), 0))
    angles = rotvec_to_euler_yxz(rotation) / ANGLE_SCALE_DEG  # (N, 3) yaw, pitch, roll
    move = np.asarray(translation, np.float64) / TRANSLATION_SCALE_CM
    cols = np.concatenate([angles, move], axis=1)
    cols = cols - np.median(cols[valid], axis=0)
    if terms == "quadratic":
        a = cols[:, :3]
        pairs = [a[:, i] * a[:, j] for i in range(3) for j in range(i, 3)]
        cols = np.concatenate([cols, np.stack(pairs, axis=1)], axis=1)
    return cols


def mouth_opening(points: np.ndarray, inner_mouth: tuple[int, ...]) -> np.ndarray:
    """The mouth's opening (T,) of object-space landmarks ``points`` (T, L, 3): the mean
    height of the lower inner lip minus the upper's. ``inner_mouth`` is the layout's
    polygon (right corner, three upper inner lip points, left corner, three lower)."""
    upper, lower = list(inner_mouth[1:4]), list(inner_mouth[5:8])
    return points[:, lower, 1].mean(axis=1) - points[:, upper, 1].mean(axis=1)


def mouth_displacement(
    points3d: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    valid: np.ndarray,
    *,
    layout: Layout,
    terms: PoseTerms = "quadratic",
) -> np.ndarray:
    """Mouth targets (N, 25, 3): the ``layout.mouth`` points of ``points3d`` (N, L, 3,
    object coordinates) minus their mean over ``valid`` (N,) frames, less what head pose
    predicts of them (:func:`pose_fit` on :func:`pose_design` of ``rotation`` (N, 3) and
    ``translation`` (N, 3), with the mouth's opening (:func:`mouth_opening`) as a
    control). Frames not valid are NaN."""
    valid = np.asarray(valid, bool)
    pts = np.asarray(points3d, np.float64)
    out = np.full((len(pts), len(layout.mouth), 3), np.nan)
    if not valid.any():
        return out
    mouth = pts[valid][:, layout.mouth]
    dv = mouth - mouth.mean(axis=0)
    x = pose_design(rotation, translation, valid, terms=terms)[valid]
    y = dv.reshape(len(dv), -1)
    controls = mouth_opening(pts[valid], layout.sets["inner_mouth"])[:, None]
    out[valid] = (y - pose_fit(x, y, controls=controls)).reshape(dv.shape)
    return out


def _standardise(a: np.ndarray) -> np.ndarray:
    sd = a.std(axis=0)
    return np.where(sd > 0, (a - a.mean(axis=0)) / np.where(sd > 0, sd, 1.0), 0.0)


def _ridge(a: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    """Ridge coefficients of centred ``b`` (T, D) on centred ``a`` (T, K), strength per frame."""
    return np.linalg.solve(a.T @ a + lam * len(a) * np.eye(a.shape[1]), a.T @ b)


def pose_fit(x: np.ndarray, y: np.ndarray, *, controls: np.ndarray) -> np.ndarray:
    """The part of the centred targets ``y`` (T, D) that the pose regressors ``x`` (T, K)
    predict, fitted jointly with ``controls`` (T, C) whose share is kept.

    For each column of ``y`` a ridge regression on ``[x, controls]`` (standardised) whose
    strength (of :data:`RIDGES`), or the controls alone, is chosen by cross-validation on
    :data:`FOLDS` contiguous blocks of the clip; only the ``x`` part is returned. Zeros
    with fewer than :data:`MIN_FRAMES` frames or without regressors.

    Why not plain least squares on pose: head motion is slow, so a clip holds fewer
    independent poses than frames, and the speech correlates with them by chance. On
    synthetic speech without any pose effect least squares took 12-17 % of its RMS over
    30 s, the cross-validated choice 0-7 % (tests/test_mouth_targets.py). The control,
    the mouth's own opening, takes the speech's share of what correlates with pose: on
    windows of 10-30 s of a render it kept the inner-lip opening's correlation with the
    truth where it was (it lost up to 0.03 without) and raised the speech's share of the
    targets' variance by 0.02-0.07. The opening itself is nearly free of pose artefacts
    there (pose explains 7 % of it, the chance correlation of the speech; of the mouth's
    width, which that render never moves, 36 %: so the width is no control). What pose
    explains of the opening is therefore kept: on the real pexels clip that is 81 % of
    it, which may be the person's or Face Mesh's; no fit can tell which.
    """
    n, k = x.shape
    if k == 0 or n < MIN_FRAMES:
        return np.zeros_like(y)
    x, c = _standardise(x), _standardise(controls)
    xc = np.concatenate([x, c], axis=1)
    edges = np.linspace(0, n, FOLDS + 1).astype(int)
    errors = np.zeros((len(RIDGES) + 1, y.shape[1]))  # last row: the controls alone
    for lo, hi in itertools.pairwise(edges):
        held = np.zeros(n, bool)
        held[lo:hi] = True
        ym, mean = y[~held].mean(axis=0), xc[~held].mean(axis=0)
        a, b, test = xc[~held] - mean, y[~held] - ym, xc[held] - mean
        for i, lam in enumerate(RIDGES):
            errors[i] += ((y[held] - ym - test @ _ridge(a, b, lam)) ** 2).sum(axis=0)
        own = _ridge(a[:, k:], b, RIDGES[0])
        errors[-1] += ((y[held] - ym - test[:, k:] @ own) ** 2).sum(axis=0)
    choice = errors.argmin(axis=0)  # (D,)
    xc = xc - xc.mean(axis=0)
    out = np.zeros_like(y)
    for i, lam in enumerate(RIDGES):
        cols = choice == i
        if cols.any():
            out[:, cols] = xc[:, :k] @ _ridge(xc, y[:, cols], lam)[:k]
    return out


def pose_explained(
    displacement: np.ndarray,
    rotation: np.ndarray,
    translation: np.ndarray,
    valid: np.ndarray,
    *,
    terms: PoseTerms = "quadratic",
) -> float:
    """Fraction of the variance of ``displacement`` (N, M, 3) over ``valid`` frames that a
    least-squares fit on :func:`pose_design` explains, in sample (0 for ``"off"``)."""
    valid = np.asarray(valid, bool) & np.isfinite(displacement).all(axis=(1, 2))
    y = displacement[valid].reshape(int(valid.sum()), -1)
    y = y - y.mean(axis=0)
    x = pose_design(rotation, translation, valid, terms=terms)[valid]
    total = float((y**2).sum())
    if not x.shape[1] or total == 0:
        return 0.0
    x = x - x.mean(axis=0)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return 1.0 - float(((y - x @ coef) ** 2).sum()) / total
