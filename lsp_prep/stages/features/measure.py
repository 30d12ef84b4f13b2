"""Head motion measured on the face's own texture, against one reference frame.

Face Mesh's landmarks lean towards a frontal face: on renders with known motion, a rigid
perspective fit to them gets the pitch about 20 % too small, whatever the focal length
(``benchmarks/accuracy_track3d.py``). The texture of the upper face (nose, temples,
the cheeks beside the nose, the brows) moves with the skull and is free of that bias, so
prep measures it:

1. **Reference.** The valid frame whose landmark pose is nearest the clip's mean rotation.
2. **Features.** Shi-Tomasi corners on the upper face of the reference crop. The eyes
   (with their lids and lashes) and the mouth and jaw are masked out: they move on their
   own. Brows move too, in expressive speech; the robust pose fit outweighs them.
3. **Surface.** Face Mesh's 468 points of the reference frame, in object coordinates,
   projected with the reference pose and triangulated. Each feature gets the triangle it
   lies in and, by barycentric weights, a 3D point on it.
4. **Measurement.** In every ``every``-th frame, each feature's neighbourhood in the reference is
   warped by the affine map its triangle undergoes between the reference pose and the
   frame's current pose estimate. Pyramidal Lucas-Kanade (OpenCV) then aligns the warped
   patch with the frame, checked forwards and backwards. All frames are measured against
   the same reference, so errors do not accumulate along the clip.

The patches of one frame are laid out side by side in two mosaics, the warped reference
and the frame, so each frame costs one ``remap`` and two Lucas-Kanade calls whatever the
number of features. :func:`lsp_prep.stages.geometry.head.refine_head` turns the measurements
into the focal length and the head poses.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay
from scipy.spatial.transform import Rotation

from lsp_prep.camera import project_object
from lsp_prep.errors import InputError
from lsp_prep.layout import Layout

EYE_MARGIN = (1.3, 2.0)
"""The eyes are masked out with their outline scaled this much (x, y) about its centre."""


@dataclass(frozen=True)
class FeatureConfig:
    """Texture features of the upper face and their measurement in every frame."""

    enabled: bool = True
    """Measure head motion on the face texture; false keeps the landmark-only track."""
    every: int = 4
    """Measure every n-th frame (and the reference); the poses of the frames between are
    the landmark poses with the correction interpolated from their measured neighbours."""
    scale: float = 1.0
    """Crops are measured at this fraction of their size (1, 0.5 or 0.25: JPEG decodes
    at these sizes directly). Half size doubles the rotation error on renders."""
    max_features: int = 200
    """At most this many features on the reference frame."""
    min_distance: float = 7.0
    """Least distance between features, in pixels of the 512 crop."""
    quality: float = 0.005
    """Shi-Tomasi quality level relative to the strongest corner."""
    window: int = 15
    """Lucas-Kanade window side at the working scale (odd)."""
    levels: int = 0
    """Pyramid levels above the working scale. The landmark pose predicts each patch
    within a few pixels, so none are needed; raise it for faster heads or worse
    landmarks."""
    max_shift: int = 8
    """Largest correction (working pixels) to the predicted position a patch may take."""
    fb_px: float = 0.3
    """Forward-backward disagreement (working pixels) beyond which a measurement is
    dropped."""
    min_features: int = 12
    """Frames with fewer measured features keep their landmark-based pose."""
    calib_frames: int = 120
    """Measured frames, chosen for pose variety, in the focal search on the features."""
    calib_features: int = 120
    """Features (spread over the list) in the focal search on the features; every feature
    is triangulated afterwards."""
    gate_margin: float = 1.5
    """A frame keeps its refined pose only where its rigid misfit to the stable landmarks
    is at most ``1 + gate_margin`` times the landmark pose's (plus ``gate_margin_px``);
    see lsp_prep.stages.geometry.quality.GateConfig."""
    gate_margin_px: float = 0.3
    """Pixels (original video) added to that bound."""
    gate_turn_deg: float = 6.0
    """... and only where it turns at most this far from the landmark pose."""
    gate_trust_features: bool = True
    """A frame whose features fit its refined pose well keeps it even where the landmarks
    disagree (a hand or an expression moves the whole mesh); see GateConfig.trust_features."""
    gate_trust_rms: float = 0.5
    """Well fitted: feature RMS at most ``1 + gate_trust_rms`` times the clip's median."""
    gate_max_spread: float = 1.75
    """Keep the landmark track whole when the refined head turns over more than this many
    times the landmarks' spread (plus one degree) on any axis; see GateConfig.max_spread."""
    gate_min_accepted: float = 0.5
    """Below this fraction of measured frames passing, the landmark track is kept whole."""
    gate_require_focal: bool = True
    """Keep the landmark track whole when the features' reprojection error does not rise
    towards both ends of the searched focal lengths (see GateConfig.require_focal)."""
    blend_frames: int = 6
    """Frames over which a refined span blends in from the landmark poses at each end."""
    rigidity_rounds: int = 3
    """Reweighted bundle adjustments that learn which features move with the skull (0:
    every feature counts fully); see lsp_prep.stages.geometry.rigidity."""
    rigidity_scale: float = 0.5
    """A feature whose RMS residual is this fraction of the median feature's counts half."""
    huber_px: float = 0.5
    """Huber threshold of the pose fits to the features (pixels, original video): single
    observations further off (a feature briefly pulled by a smile or a hand) count less."""

    def __post_init__(self) -> None:
        if self.every < 1:
            raise InputError(f"features.every must be >= 1, got {self.every}")
        if self.scale not in (1.0, 0.5, 0.25):
            raise InputError(f"features.scale must be 1, 0.5 or 0.25, got {self.scale}")
        if self.window < 5 or self.window % 2 == 0:
            raise InputError(f"features.window must be odd and >= 5, got {self.window}")
        if self.max_features < 6 or self.min_features < 6:
            raise InputError("features.max_features and features.min_features must be >= 6")
        if self.calib_frames < 8:
            raise InputError(f"features.calib_frames must be >= 8, got {self.calib_frames}")
        if self.calib_features < 6:
            raise InputError(f"features.calib_features must be >= 6, got {self.calib_features}")
        if self.max_shift < 1 or self.levels < 0:
            raise InputError("features.max_shift must be >= 1 and features.levels >= 0")
        if (
            min(
                self.gate_margin,
                self.gate_margin_px,
                self.gate_turn_deg,
                self.blend_frames,
                self.gate_trust_rms,
            )
            < 0
        ):
            raise InputError("features.gate_* and features.blend_frames must be >= 0")
        if self.gate_max_spread <= 1:
            raise InputError(f"features.gate_max_spread must be > 1, got {self.gate_max_spread}")
        if not 0 <= self.gate_min_accepted <= 1:
            raise InputError("features.gate_min_accepted must be in [0, 1]")
        if self.rigidity_rounds < 0 or self.rigidity_scale <= 0 or self.huber_px <= 0:
            raise InputError(
                "features.rigidity_rounds must be >= 0, rigidity_scale and huber_px > 0"
            )
        if self.fb_px <= 0 or self.min_distance <= 0 or not 0 < self.quality < 1:
            raise InputError("features.fb_px > 0, min_distance > 0 and quality in (0, 1)")


@dataclass(frozen=True)
class Reference:
    """The reference frame's features, each tied to a triangle of the face surface."""

    index: int
    """Frame index of the reference."""
    image: np.ndarray
    """(H, W) uint8 grey reference crop at the working scale."""
    points2d: np.ndarray
    """(P, 2) feature positions in the reference, working pixels."""
    points3d: np.ndarray
    """(P, 3) the features' points on the surface, object coordinates (cm)."""
    triangles: np.ndarray
    """(P, 3, 3) object coordinates of the triangle each feature lies in."""


def reference_frame(rotvec: np.ndarray, valid: np.ndarray) -> int:
    """The valid frame whose rotation is nearest the mean rotation of the valid frames."""
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        raise InputError("no valid frame to take as the feature reference")
    rot = Rotation.from_rotvec(rotvec[idx])
    return int(idx[np.argmin((rot * rot.mean().inv()).magnitude())])


def upper_face_mask(
    shape: tuple[int, int], lsp2d: np.ndarray, layout: Layout, margin: int
) -> np.ndarray:
    """(H, W) uint8 mask of the upper face: temples, brows, the nose and the cheeks beside
    it. The eyes are left out with a margin for the lids and lashes (they move on their
    own), and the mouth, the chin and the jaw are outside."""
    g = layout.groups
    upper = [
        *g["contour"][:3],
        *g["contour"][-3:],
        *g["right_brow"],
        *g["left_brow"],
        *g["eye_corners"],
        *g["nose"],
        *g["glabella"],
    ]
    mask: np.ndarray = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(lsp2d[upper]).astype(np.int32)), (255,))
    eye_c, eye_m = g["eye_corners"], g["eye_mids"]
    for eye in ([*eye_c[:4], *eye_m[:4]], [*eye_c[4:], *eye_m[4:]]):
        pts = lsp2d[eye]
        centre = pts.mean(0)
        grown = centre + (pts - centre) * EYE_MARGIN
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(grown).astype(np.int32)), (0,))
    if margin > 0:
        mask = cv2.erode(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    return mask


def build_reference(
    index: int,
    image: np.ndarray,
    surface: np.ndarray,
    rotvec: np.ndarray,
    trans: np.ndarray,
    K: np.ndarray,
    lsp2d: np.ndarray,
    *,
    layout: Layout,
    config: FeatureConfig = FeatureConfig(),
) -> Reference:
    """Features on the reference ``image`` (grey, working scale) and their 3D points.

    ``surface`` (468, 3) is the reference frame's Face Mesh in object coordinates,
    ``rotvec``/``trans`` its pose and ``K`` the working-scale intrinsics; ``lsp2d``
    (73, 2) its landmarks in working pixels (for the mask).
    """
    margin = max(1, round(config.window * 0.3))
    mask = upper_face_mask((image.shape[0], image.shape[1]), lsp2d, layout, margin)
    dist = max(2.0, config.min_distance * config.scale)
    found = cv2.goodFeaturesToTrack(image, config.max_features, config.quality, dist, mask=mask)
    if found is None or len(found) < config.min_features:
        raise InputError(
            f"only {0 if found is None else len(found)} texture features on the upper face "
            f"of frame {index} (needs {config.min_features})"
        )
    pts = found[:, 0].astype(np.float64)
    proj = project_object(surface, rotvec, trans, K)
    tri = Delaunay(proj)
    simplex = tri.find_simplex(pts)
    pts, simplex = pts[simplex >= 0], simplex[simplex >= 0]
    t = tri.transform[simplex]
    b = np.einsum("nij,nj->ni", t[:, :2], pts - t[:, 2])
    bary = np.c_[b, 1 - b.sum(1)]
    corners = surface[tri.simplices[simplex]]  # (P, 3, 3)
    return Reference(
        index=int(index),
        image=image,
        points2d=pts,
        points3d=np.einsum("pk,pkd->pd", bary, corners),
        triangles=corners,
    )


def measure_frame(
    frame: np.ndarray,
    ref: Reference,
    ref_pose: tuple[np.ndarray, np.ndarray, np.ndarray],
    pose: tuple[np.ndarray, np.ndarray, np.ndarray],
    config: FeatureConfig = FeatureConfig(),
) -> np.ndarray:
    """Positions (P, 2) of the reference features in ``frame`` (grey, working scale), NaN
    where hidden, outside the frame, or not confirmed by the backward check.

    ``ref_pose`` and ``pose`` are (rotvec, T, K) of the reference and of the frame's
    current estimate: each feature's patch is warped by its own triangle's motion.
    """
    p = len(ref.points2d)
    out = np.full((p, 2), np.nan)
    src = project_object(ref.triangles, *ref_pose)  # (P, 3, 2)
    dst = project_object(ref.triangles, *pose)
    ds, dd = src[:, 1:] - src[:, :1], dst[:, 1:] - dst[:, :1]  # (P, 2, 2) edge vectors
    det_s = ds[:, 0, 0] * ds[:, 1, 1] - ds[:, 0, 1] * ds[:, 1, 0]
    det_d = dd[:, 0, 0] * dd[:, 1, 1] - dd[:, 0, 1] * dd[:, 1, 0]
    seen = (np.sign(det_s) == np.sign(det_d)) & (np.abs(det_d) > 0.25 * np.abs(det_s))
    idx = np.flatnonzero(seen)
    if len(idx) < 6:
        return out
    win = config.window
    tile = win * 2**config.levels + 2 * config.max_shift + 4
    out[idx] = _align(
        frame,
        ref,
        src[idx],
        dst[idx],
        ref.points2d[idx],
        tile=tile,
        levels=config.levels,
        shift=config.max_shift,
        fb_px=config.fb_px,
        window=win,
    )
    return out


def _warp_points(src: np.ndarray, dst: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Points ``q`` (n, 2) in the reference moved by their triangles' affine maps."""
    ds, dd = src[:, 1:] - src[:, :1], dst[:, 1:] - dst[:, :1]
    b_fwd = dd.transpose(0, 2, 1) @ _inv2(ds.transpose(0, 2, 1))
    return np.einsum("pij,pj->pi", b_fwd, q - src[:, 0]) + dst[:, 0]


def _align(
    frame: np.ndarray,
    ref: Reference,
    src: np.ndarray,
    dst: np.ndarray,
    q: np.ndarray,
    *,
    tile: int,
    levels: int,
    shift: int,
    fb_px: float,
    window: int,
) -> np.ndarray:
    """Where the reference points ``q`` (n, 2) are in ``frame``: each one's neighbourhood
    warped by the affine map of its triangle (``src`` -> ``dst``, (n, 3, 2)), laid out
    with the others in one mosaic, aligned with the frame's mosaic by Lucas-Kanade."""
    out = np.full((len(q), 2), np.nan)
    ds, dd = src[:, 1:] - src[:, :1], dst[:, 1:] - dst[:, :1]
    b_inv = ds.transpose(0, 2, 1) @ _inv2(dd.transpose(0, 2, 1))  # frame -> reference
    pred = _warp_points(src, dst, q)
    hgt, wid = frame.shape[:2]
    corner = np.round(pred).astype(np.int64) - tile // 2  # tile origin in frame pixels
    inside = ((corner >= -tile // 2) & (corner + tile // 2 <= np.array([wid, hgt]))).all(1)
    idx = np.flatnonzero(inside)
    corner, b_inv, pred, src, dst = corner[idx], b_inv[idx], pred[idx], src[idx], dst[idx]
    n = len(idx)
    if n == 0:
        return out
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    pad = rows * cols - n

    def tiles(x: np.ndarray) -> np.ndarray:  # (n, ...) -> (rows, 1, cols, 1, ...)
        x = np.concatenate([x, np.repeat(x[:1], pad, 0)]) if pad else x
        return x.reshape(rows, 1, cols, 1, *x.shape[1:])

    ar = np.arange(tile)
    u, v = ar[None, None, None, :], ar[None, :, None, None]
    cx, cy = tiles(corner[:, 0]), tiles(corner[:, 1])
    # the frame's tiles, cut from a padded copy through a window view, laid out in rows
    padded = cv2.copyMakeBorder(frame, tile, tile, tile, tile, cv2.BORDER_REPLICATE)
    shape = (rows * tile, cols * tile)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (tile, tile))
    cut = windows[tiles(corner[:, 1])[:, 0, :, 0] + tile, tiles(corner[:, 0])[:, 0, :, 0] + tile]
    frame_mosaic = np.ascontiguousarray(cut.transpose(0, 2, 1, 3)).reshape(shape)
    # the reference, warped tile by tile into the frame's coordinates
    bi = tiles(b_inv.astype(np.float32))
    fx = (cx + u - tiles(dst[:, 0, 0])).astype(np.float32)
    fy = (cy + v - tiles(dst[:, 0, 1])).astype(np.float32)
    mx = bi[..., 0, 0] * fx + bi[..., 0, 1] * fy + tiles(src[:, 0, 0]).astype(np.float32)
    my = bi[..., 1, 0] * fx + bi[..., 1, 1] * fy + tiles(src[:, 0, 1]).astype(np.float32)
    ref_mosaic = cv2.remap(
        ref.image,
        mx.reshape(shape),
        my.reshape(shape),
        cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )

    origin = np.stack([np.arange(n) % cols, np.arange(n) // cols], 1) * tile  # tile origins
    p0 = (origin + pred - corner).astype(np.float32)
    win = (window, window)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
    p1, st, _ = cv2.calcOpticalFlowPyrLK(
        ref_mosaic, frame_mosaic, p0, p0.copy(), winSize=win, maxLevel=levels, criteria=crit
    )
    back, st2, _ = cv2.calcOpticalFlowPyrLK(
        frame_mosaic, ref_mosaic, p1, p0.copy(), winSize=win, maxLevel=levels, criteria=crit
    )
    good = (st[:, 0] == 1) & (st2[:, 0] == 1)
    good &= np.linalg.norm(back - p0, axis=1) < fb_px
    good &= (np.abs(p1 - p0) <= shift).all(1)
    out[idx[good]] = (corner + (p1 - origin))[good]
    return out


def _inv2(m: np.ndarray) -> np.ndarray:
    """Inverses of (P, 2, 2) matrices (closed form; LAPACK's batched call costs more)."""
    det = m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    out = np.empty_like(m)
    out[:, 0, 0], out[:, 1, 1] = m[:, 1, 1] / det, m[:, 0, 0] / det
    out[:, 0, 1], out[:, 1, 0] = -m[:, 0, 1] / det, -m[:, 1, 0] / det
    return out
