"""How well a head track explains the detected landmarks, and the gate that keeps a
texture-refined pose only where it explains them about as well as the landmark pose.

The *rigid misfit* of a frame is the RMS distance between the track's rigid shape on the
stable landmarks (nose bridge, eye corners, ...), projected with the frame's pose, and the
landmarks detected there. A pose that leans away from what the face shows raises it; it
needs no ground truth, so it is measured on every real clip.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import distance_transform_edt
from scipy.spatial.transform import Rotation, Slerp

from lsp_prep.camera import project

SOURCE_LANDMARKS, SOURCE_REFINED, SOURCE_BLEND = 0, 1, 2
"""Values of the dataset's ``track/source``: where a frame's pose comes from."""


@dataclass(frozen=True)
class GateConfig:
    """When a texture-refined pose replaces the landmark pose (see :func:`gate_poses`)."""

    margin: float = 1.5
    """A refined pose may explain the stable landmarks this fraction worse than the
    landmark pose (its rigid misfit at most ``1 + margin`` times the landmark pose's).
    Not small: Face Mesh's 2D landmarks slide with the pose, so on rigid renders the
    true pose's misfit is ~1.9 times the landmark fit's (benchmarks/accuracy_track3d.py)."""
    margin_px: float = 0.3
    """... plus this many pixels (original video)."""
    max_turn_deg: float = 6.0
    """... and turns at most this far from the landmark pose after its lean is taken out
    (:func:`lean_map`). Face Mesh leans towards a frontal face, by up to 30 % of the
    pitch on renders turning 35 degrees; what is left after one linear map of the Euler
    angles is a few degrees, and a larger correction is more often a feature track that
    lost the face (pexels re-encoded: median 6.9 degrees)."""
    require_focal: bool = True
    """Refuse the refinement as a whole when the texture features do not bound the focal
    length (``Calibration.bounded``: the interval of their error curve's minimum reaches
    an end of the searched range, or the head turns too little):
    the features are then explained as well by a much flatter or deeper face, so their
    rotations are not determined better than the landmarks'. Features that bound f but
    do not identify it (its interval too wide, ``camera.max_interval``) keep their poses,
    fitted at the focal length chosen without them (the expressive render: 1.33 / 2.52
    degrees at the default 922 px, 1.42 / 2.84 at its features' 692 px). Measured on the real pexels
    clip (features flat towards long focal lengths): refined, the clip and its re-encoding
    (crf 18) came out 5.6 degrees apart (median) and the rigid misfit rose from 1.6 to
    3.4 px; the landmark track keeps them 0.7 degrees apart. Renders whose features fix
    the focal length keep their refinement."""
    trust_features: bool = True
    """A measured frame whose features fit its refined pose well (see ``trust_rms``) keeps
    that pose even where the landmarks disagree: a hand over the mouth, a smile or a
    blink moves Face Mesh's whole mesh, stable points included, while the upper face's
    texture still fixes the skull. On the expressive render (a hand crossing the lower
    face for 1.5 s) the landmark test refused 45 of the hand's 90 frames, whose
    lean-corrected landmark poses were then 5.5 degrees off (median); trusted, the
    render's rotation error went from 1.67 / 4.30 to 1.42 / 2.84 degrees (median / p90)
    and the narrow render's from 0.57 / 3.23 to 0.42 / 0.84."""
    trust_rms: float = 0.5
    """A well-fitted frame: its features' RMS residual under the refined pose at most
    ``1 + trust_rms`` times the clip's median, on at least half the clip's median number of
    features (0.5 and 1.0 gave the same errors on the expressive render; 0.25, 1.33 / 3.15)."""
    max_spread: float = 1.75
    """Refuse the refinement as a whole when the refined head turns, on any axis, over more
    than this many times the landmark track's spread (:func:`spread_ratio`: standard
    deviations of the Euler angle, the landmarks' plus one degree). Face Mesh leans towards
    a frontal face by at most about a third (Euler slopes 0.67-0.94 on renders), so a true
    refinement spreads the rotations by up to 1.5x; the three renders of
    benchmarks/accuracy_track3d.py measure 1.02-1.22. Five seconds of the real pexels clip,
    mirrored, had its features fix the focal length at 347 px and measure 2.0 and 2.7 on
    yaw and pitch (the same 5 s unmirrored kept its landmark track: 9.7 degrees apart)."""
    min_accepted: float = 0.5
    """Below this fraction of the measured frames passing the gate, the refinement (and
    its focal length) is refused as a whole and the landmark track kept."""
    max_gap: int = 8
    """Accepted frames at most this many frames apart form one span; the frames between
    them take the interpolated correction."""
    ramp: int = 6
    """Frames over which a span's weight rises from 0 to 1 inside each of its ends."""


def rigid_misfit(
    rotation: np.ndarray,
    translation: np.ndarray,
    shape: np.ndarray,
    K: np.ndarray,
    points2d: np.ndarray,
) -> np.ndarray:
    """Per-frame RMS distance (N,) in pixels between ``shape`` (P, 3) object points seen
    with the poses ``rotation`` (N, 3) Rodrigues and ``translation`` (N, 3) through ``K``
    ((3, 3) or (N, 3, 3)) and the detected ``points2d`` (N, P, 2) in the same pixels.
    Points that are NaN are left out; NaN where a frame has none."""
    cam = np.einsum("nij,pj->npi", Rotation.from_rotvec(rotation).as_matrix(), shape)
    res = project(cam + translation[:, None], K) - points2d
    d2 = (res**2).sum(-1)
    seen = np.isfinite(d2)
    count = seen.sum(1)
    total = np.where(seen, d2, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, np.sqrt(total / count), np.nan)


def accepted_weight(accepted: np.ndarray, *, max_gap: int, ramp: int) -> np.ndarray:
    """Per-frame weight (N,) in [0, 1] of the refined pose.

    ``accepted`` (N,) marks the measured frames whose refined pose passed the gate. Spans
    are runs of accepted frames at most ``max_gap`` frames apart (the frames between them
    were not measured, and take the correction interpolated between its two ends). The
    weight is 1 inside a span, falls to 0 linearly over the ``ramp`` frames next to each
    end (inside the span, so no correction is carried beyond it) and is 0 elsewhere.
    """
    n = len(accepted)
    idx = np.flatnonzero(accepted)
    inside = np.zeros(n, bool)
    for a, b in itertools.pairwise(idx):
        if b - a <= max_gap:
            inside[a : b + 1] = True
    inside[idx] = True
    if ramp <= 0 or not inside.any():
        return inside.astype(float)
    # distance (in frames) to the nearest frame outside a span; the clip's ends count as outside
    padded = np.concatenate([[False], inside, [False]])
    dist = distance_transform_edt(padded)[1:-1]
    return np.clip(dist / (ramp + 1), 0.0, 1.0) * inside


def blend_poses(
    rot_a: np.ndarray, t_a: np.ndarray, rot_b: np.ndarray, t_b: np.ndarray, weight: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the pose ``weight`` (N,) of the way from a to b: rotations (N, 3)
    Rodrigues by slerp, translations (N, 3) linearly."""
    ra, rb = Rotation.from_rotvec(rot_a), Rotation.from_rotvec(rot_b)
    step = (rb * ra.inv()).as_rotvec() * weight[:, None]
    rot = (Rotation.from_rotvec(step) * ra).as_rotvec()
    return rot, t_a + (t_b - t_a) * weight[:, None]


def corrected_poses(
    rot_base: np.ndarray, t_base: np.ndarray, idx: np.ndarray, rv: np.ndarray, tr: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Poses (N, 3), (N, 3) of every frame: ``rv``/``tr`` on the frames ``idx``, elsewhere
    the base pose times the correction (refined pose relative to base) interpolated from
    the frames ``idx`` around it, held constant beyond the first and last of them."""
    n = len(rot_base)
    r_base = Rotation.from_rotvec(rot_base)
    corr = Rotation.from_rotvec(rv) * r_base[idx].inv()
    t = np.arange(n)
    tq = np.clip(t, idx[0], idx[-1])
    corr_t = Slerp(idx, corr)(tq) if len(idx) > 1 else Rotation.concatenate([corr] * n)
    rot = (corr_t * r_base).as_rotvec()
    dt = tr - t_base[idx]
    trans = t_base + np.stack([np.interp(t, idx, dt[:, k]) for k in range(3)], axis=1)
    rot[idx], trans[idx] = rv, tr
    return rot, trans


@dataclass(frozen=True)
class Gate:
    """The outcome of :func:`gate_poses`."""

    rotation: np.ndarray
    """(N, 3) Rodrigues: the refined pose where accepted, the landmark pose without its
    lean (:func:`lean_map`) elsewhere."""
    translation: np.ndarray
    """(N, 3)."""
    weight: np.ndarray
    """(N,) in [0, 1]: how much of the refined pose each frame took."""
    accepted: np.ndarray
    """(N,) bool: measured frames whose refined pose passed the gate."""


def gate_poses(
    landmarks: np.ndarray,
    shape: np.ndarray,
    K: np.ndarray,
    fallback: tuple[np.ndarray, np.ndarray],
    refined: tuple[np.ndarray, np.ndarray, np.ndarray],
    *,
    margin: float,
    margin_px: float,
    max_turn_deg: float = 180.0,
    max_gap: int,
    ramp: int,
    trusted: np.ndarray | None = None,
) -> Gate:
    """Keep a refined pose only where it explains the landmarks about as well as the
    landmark pose does.

    ``landmarks`` (N, P, 2) the detected stable landmarks (NaN where not valid), ``shape``
    (P, 3) their rigid object points, ``fallback`` the landmark poses (N, 3), (N, 3) fitted
    to them with that shape and ``K``, ``refined`` = (idx, rv, tr) the refined poses of the
    measured frames ``idx``. A measured frame is accepted when its refined pose's
    :func:`rigid_misfit` is at most ``(1 + margin)`` times the landmark pose's plus
    ``margin_px`` and it turns at most ``max_turn_deg`` from the landmark pose with its
    lean towards frontal taken out (:func:`lean_map`, fitted on the frames that pass the
    misfit test). The correction of the accepted frames is interpolated between them
    within spans (:func:`accepted_weight`) and blended in with its weight; every other
    frame takes its landmark pose with the lean that the accepted frames show taken out
    (unchanged when fewer than 8 frames are accepted).

    ``trusted`` (M,) marks measured frames accepted whatever the landmarks say (their
    features fit well: :func:`well_fitted`).
    """
    rot_l, t_l = fallback
    idx, rv, tr = refined
    m_land = rigid_misfit(rot_l[idx], t_l[idx], shape, K, landmarks[idx])
    m_ref = rigid_misfit(rv, tr, shape, K, landmarks[idx])
    ok = m_ref <= m_land * (1.0 + margin) + margin_px  # NaN (no landmarks) fails
    expected = apply_lean_map(rot_l[idx], lean_map(rot_l[idx[ok]], rv[ok]))
    turn = (Rotation.from_rotvec(rv) * Rotation.from_rotvec(expected).inv()).magnitude()
    ok &= np.degrees(turn) <= max_turn_deg
    if trusted is not None:
        ok |= trusted
    # every landmark pose without its lean, as fitted on the accepted frames
    rot_l = apply_lean_map(rot_l, lean_map(rot_l[idx[ok]], rv[ok]))
    accepted = np.zeros(len(rot_l), bool)
    accepted[idx[ok]] = True
    weight = accepted_weight(accepted, max_gap=max_gap, ramp=ramp)
    if not ok.any():
        return Gate(rot_l.copy(), t_l.copy(), weight, accepted)
    rot_c, t_c = corrected_poses(rot_l, t_l, idx[ok], rv[ok], tr[ok])
    rot, trans = blend_poses(rot_l, t_l, rot_c, t_c, weight)
    return Gate(rot, trans, weight, accepted)


def spread_ratio(rot_land: np.ndarray, rot_ref: np.ndarray) -> np.ndarray:
    """Per Euler axis (yaw, pitch, roll), the refined rotations' standard deviation over
    the landmark rotations' plus one degree (both (N, 3) rotation vectors)."""
    from lsp_prep.camera import rotvec_to_euler_yxz

    e_l, e_r = rotvec_to_euler_yxz(rot_land), rotvec_to_euler_yxz(rot_ref)
    return e_r.std(axis=0) / (e_l.std(axis=0) + 1.0)


def well_fitted(rms: np.ndarray, count: np.ndarray, *, trust_rms: float) -> np.ndarray:
    """Measured frames whose features fit their refined pose well: RMS residual ``rms``
    (M,) at most ``1 + trust_rms`` times the median, on at least half the median ``count``
    (M,) of features."""
    return (rms <= np.median(rms) * (1.0 + trust_rms)) & (count >= 0.5 * np.median(count))


def lean_map(
    rot_land: np.ndarray, rot_ref: np.ndarray, *, rounds: int = 3, prior_deg: float = 1.0
) -> np.ndarray | None:
    """The landmark track's systematic lean, as coefficients (4, 3) of one affine map from
    the landmark poses' (yaw, pitch, roll, 1) to the refined poses' (yaw, pitch, roll),
    degrees, fitted on frames with both (``rot_land``, ``rot_ref`` (M, 3) rotation
    vectors) by least squares and refitted ``rounds`` times without the frames more than
    3 MADs (at least 1 degree) off; None with fewer than 8 frames to fit.

    Face Mesh's landmarks lean towards a frontal face by a roughly constant fraction of
    the angle, more on one axis when the head turns on another (and the two tracks'
    object frames may differ by a small constant), which such a map captures; a frame
    whose refined pose the map does not explain has either a wrong refined pose or a
    landmark pose that is wrong for that frame. The linear part is pulled towards the
    identity as if by frames spread ``prior_deg`` about the mean on every axis: a clip that
    hardly turns says little about its lean, and gets almost none.
    """
    from lsp_prep.camera import rotvec_to_euler_yxz

    e_l, e_r = rotvec_to_euler_yxz(rot_land), rotvec_to_euler_yxz(rot_ref)
    keep = np.ones(len(e_l), bool)
    coef = None
    for _ in range(rounds):
        if keep.sum() < 8:
            return coef
        x = np.c_[e_l[keep], np.ones(keep.sum())]
        ridge = np.diag([keep.sum() * prior_deg**2] * 3 + [0.0])
        start = np.r_[np.eye(3), np.zeros((1, 3))]
        coef = np.linalg.solve(x.T @ x + ridge, x.T @ e_r[keep] + ridge @ start)
        off = np.linalg.norm(np.c_[e_l, np.ones(len(e_l))] @ coef - e_r, axis=1)
        mad = np.median(np.abs(off[keep] - np.median(off[keep])))
        keep = off <= np.median(off[keep]) + max(3 * 1.4826 * mad, 1.0)
    return coef


def apply_lean_map(rot_land: np.ndarray, coef: np.ndarray | None) -> np.ndarray:
    """Landmark rotations (N, 3) through :func:`lean_map`'s ``coef`` (unchanged if None)."""
    from lsp_prep.camera import euler_yxz_to_rotvec, rotvec_to_euler_yxz

    if coef is None:
        return np.asarray(rot_land, np.float64).copy()
    e = np.c_[rotvec_to_euler_yxz(rot_land), np.ones(len(rot_land))] @ coef
    return euler_yxz_to_rotvec(e[:, 0], e[:, 1], e[:, 2]).reshape(-1, 3)
