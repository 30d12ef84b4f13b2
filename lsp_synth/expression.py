"""Real non-rigid face motion for the 3D renders, and a hand that crosses the face.

Rigid renders flatter a head tracker: brows, eyelids and cheeks never move, so every
landmark votes for the head's pose. :func:`clip_expressions` takes the expressions of a
real talking clip instead: Face Mesh on every frame, each frame's rigid part removed by a
similarity fit on skull points (:data:`SKULL`: nose bridge, eye corners, forehead), what
is left (blinks, brow raises, smiles, speech) relative to the clip's median face.
:meth:`Expressions.offsets_cm` scales it to a :class:`~lsp_synth.mesh.FaceModel` and
resamples it to a render's frame times; :func:`lsp_synth.render3d.render_head_clip` adds
it to the mesh frame by frame, so the truth stays the skull's rigid pose.

Skull points carry no expression by construction, but the rest of the face does, and a
tracker that fits all of it rigidly is pulled off the skull: the expressions of a real
clip carry an apparent rotation of about a degree on upper-face points.

:class:`Hand` is a hand-like occluder (a palm and four fingers in the photo's skin colour)
that sweeps across the lower face for a second or two: a talking person's hand in front of
the mouth. The frames it covers are part of the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsp_prep.constants import EYE_DISTANCE_CM, N_MESH_POINTS
from lsp_prep.errors import InputError
from lsp_synth.mesh import EYE_OUTER

SKULL: tuple[int, ...] = (
    *(168, 6, 197, 195),  # nose bridge
    *(33, 133, 362, 263),  # eye corners
    *(10, 151, 9, 108, 337, 109, 338),  # forehead
)
"""MediaPipe indices of points that move with the skull, not with expression: the
rigid part of a real clip's motion is fitted on these."""


@dataclass(frozen=True, eq=False)
class Expressions:
    """A real clip's non-rigid face motion, rigid part removed (see :func:`clip_expressions`)."""

    offsets: np.ndarray
    """(N, 478, 3) displacement of every Face Mesh point from the clip's median face, in
    units of the outer-eye-corner distance; axes x right, y down, z away from the camera
    (MediaPipe's, so z has MediaPipe's depth scale)."""
    fps: float
    """Frame rate of the clip the offsets come from."""

    def __post_init__(self) -> None:
        if self.offsets.ndim != 3 or self.offsets.shape[1:] != (N_MESH_POINTS, 3):
            raise ValueError(f"offsets must be (N, {N_MESH_POINTS}, 3), got {self.offsets.shape}")

    @property
    def duration_s(self) -> float:
        return len(self.offsets) / self.fps

    def offsets_cm(
        self,
        times: np.ndarray,
        *,
        rest: np.ndarray,
        depth_scale: float = 1.0,
        gain: float = 1.0,
        rigid_radius_cm: float = 2.5,
    ) -> np.ndarray:
        """Offsets (T, 478, 3) in object centimetres at ``times`` (T,) seconds for a face
        whose rest vertices are ``rest`` (478, 3) cm.

        Times past the clip's end wrap around (the clip loops). ``depth_scale`` multiplies
        z (a :class:`~lsp_synth.mesh.FaceModel`'s ``depth_scale``, so that expressions
        have the mesh's depth); ``gain`` scales the whole motion. The skull does not
        deform: each vertex's offset is multiplied by ``min(1, d / rigid_radius_cm)``
        squared, ``d`` its distance to the nearest :data:`SKULL` point of ``rest``, so the
        skull points stay put and the motion fades in around them.
        """
        n = len(self.offsets)
        pos = (np.asarray(times, np.float64) * self.fps) % n
        i0 = np.floor(pos).astype(int)
        frac = (pos - i0)[:, None, None]
        i1 = (i0 + 1) % n
        out = (1 - frac) * self.offsets[i0] + frac * self.offsets[i1]
        out = out * (gain * EYE_DISTANCE_CM)
        out[..., 2] *= depth_scale
        if rigid_radius_cm > 0:
            rest = np.asarray(rest, np.float64)
            d = np.linalg.norm(rest[:, None] - rest[list(SKULL)][None], axis=-1).min(axis=1)
            out *= (np.minimum(1.0, d / rigid_radius_cm) ** 2)[None, :, None]
        return out


def mesh_sequence(video: Path, *, max_side: int = 640) -> tuple[np.ndarray, float]:
    """Face Mesh on every frame of ``video``: points (N, 478, 3) in original pixels (NaN
    where no face was found) and the frame rate they are at (the clip's, rounded)."""
    from lsp_prep.media import probe
    from lsp_prep.stages.track import TrackConfig, track_video

    info = probe(video)
    if not info.has_video:
        raise InputError(f"{video} has no video stream")
    fps = max(1, round(info.fps))
    tracks = track_video(video, info, fps=fps, config=TrackConfig(max_side=max_side))
    mesh = np.asarray(tracks.mesh, np.float64)
    mesh[~np.asarray(tracks.detected, bool)] = np.nan
    return mesh, float(fps)


def remove_rigid(mesh: np.ndarray, *, skull: tuple[int, ...] = SKULL) -> np.ndarray:
    """Frames (N, 478, 3) with each one's similarity motion removed: every frame fitted on
    its ``skull`` points to the median skull (three rounds, the median updated), in units
    of the outer-eye-corner distance of that median. NaN frames stay NaN."""
    from lsp_prep.stages.geometry.shape import procrustes

    ok = np.isfinite(mesh).all(axis=(1, 2))
    if ok.sum() < 2:
        raise InputError("fewer than two frames with a face: no expressions to take")
    pts = mesh[ok]
    ref = np.median(pts[:, list(skull)], axis=0)
    for _ in range(3):
        rot, scale, t = procrustes(pts[:, list(skull)], ref)
        aligned = scale[:, None, None] * np.einsum("nij,npj->npi", rot, pts) + t[:, None]
        ref = np.median(aligned[:, list(skull)], axis=0)
    unit = np.median(np.linalg.norm(aligned[:, EYE_OUTER[0]] - aligned[:, EYE_OUTER[1]], axis=1))
    out = np.full(mesh.shape, np.nan)
    out[ok] = aligned / unit
    return out


def clip_expressions(
    video: Path,
    *,
    skull: tuple[int, ...] = SKULL,
    max_offset: float = 0.35,
    components: int = 8,
    smooth_frames: float = 1.5,
) -> Expressions:
    """The expressions of a real talking clip (see the module docstring).

    Frames without a face take their neighbours' offsets (linear in time). Displacements
    longer than ``max_offset`` eye distances (a landmark lost under a hand, not a face
    moving) are shortened to it. Face Mesh's frame-to-frame jitter is not skin motion:
    the offsets keep their first ``components`` principal components (8 hold about 97 %
    of the variance on the pexels clip) and are smoothed over ``smooth_frames`` frames
    (Gaussian sigma); 0 keeps them raw.
    """
    mesh, fps = mesh_sequence(video)
    aligned = remove_rigid(mesh, skull=skull)
    ok = np.isfinite(aligned).all(axis=(1, 2))
    offsets = aligned - np.median(aligned[ok], axis=0)
    if not ok.all():
        t, good = np.arange(len(ok)), np.flatnonzero(ok)
        flat = offsets.reshape(len(ok), -1)
        for k in range(flat.shape[1]):
            flat[:, k] = np.interp(t, good, flat[good, k])
        offsets = flat.reshape(offsets.shape)
    length = np.linalg.norm(offsets, axis=-1, keepdims=True)
    offsets *= np.minimum(1.0, max_offset / np.maximum(length, 1e-12))
    return Expressions(offsets=denoise(offsets, components, smooth_frames), fps=fps)


def denoise(offsets: np.ndarray, components: int, smooth_frames: float) -> np.ndarray:
    """``offsets`` (N, 478, 3) on their first ``components`` principal components (all
    with 0), then Gaussian-smoothed in time with sigma ``smooth_frames`` (none with 0)."""
    from scipy.ndimage import gaussian_filter1d

    x = offsets.reshape(len(offsets), -1)
    if 0 < components < min(x.shape):
        mean = x.mean(axis=0)
        u, sv, vt = np.linalg.svd(x - mean, full_matrices=False)
        x = (u[:, :components] * sv[:components]) @ vt[:components] + mean
    out = x.reshape(offsets.shape)
    return gaussian_filter1d(out, smooth_frames, axis=0) if smooth_frames > 0 else out


@dataclass(frozen=True)
class Hand:
    """A hand-like occluder sweeping across the lower face.

    From ``start_s`` for ``duration_s`` seconds the hand moves from beside the face (the
    image-left side) across the mouth and chin to the other side, fingers pointing up,
    its palm ``size`` times the face's width.
    """

    start_s: float = 1.0
    """When the hand enters (seconds)."""
    duration_s: float = 1.5
    """How long it takes to cross (seconds)."""
    size: float = 0.55
    """Palm width as a fraction of the face's projected width."""
    colour: tuple[int, int, int] | None = None
    """RGB; None takes the median colour of the cheeks in the model's photo."""

    def __post_init__(self) -> None:
        if not (self.duration_s > 0 and self.start_s >= 0 and 0 < self.size < 2):
            raise InputError(f"Hand needs start_s >= 0, duration_s > 0, 0 < size < 2, got {self}")

    def progress(self, times: np.ndarray) -> np.ndarray:
        """(T,) position of the hand along its sweep in [0, 1], NaN when out of the frame."""
        u = (np.asarray(times, np.float64) - self.start_s) / self.duration_s
        return np.where((u >= 0) & (u <= 1), u, np.nan)


def skin_colour(texture: np.ndarray, uv: np.ndarray) -> tuple[int, int, int]:
    """Median RGB of the photo ``texture`` around the two cheek points (MediaPipe 50, 280)."""
    patches = []
    for idx in (50, 280):
        x, y = np.round(uv[idx]).astype(int)
        patches.append(texture[max(0, y - 6) : y + 7, max(0, x - 6) : x + 7].reshape(-1, 3))
    c = np.median(np.concatenate(patches), axis=0)
    return int(c[0]), int(c[1]), int(c[2])


def hand_mask(
    frame_size: tuple[int, int], face2d: np.ndarray, u: float, *, size: float
) -> np.ndarray:
    """Alpha (H, W) float32 in [0, 1] of the hand at sweep position ``u`` over a face whose
    projected Face Mesh points are ``face2d`` (478, 2) pixels: the palm just below the chin,
    the fingertips up to about the nose tip."""
    import cv2

    w, h = frame_size
    lo, hi = face2d.min(0), face2d.max(0)
    face_w = float(hi[0] - lo[0])
    palm_w = size * face_w
    chin = face2d[152]
    cy = chin[1] + 0.1 * palm_w
    cx = lo[0] - 0.6 * palm_w + u * (face_w + 1.2 * palm_w)
    mask = np.zeros((h, w), np.uint8)
    scale = 4  # sub-pixel drawing
    c = (int(round(cx * scale)), int(round(cy * scale)))
    axes = (int(round(0.5 * palm_w * scale)), int(round(0.6 * palm_w * scale)))
    cv2.ellipse(mask, c, axes, 0, 0, 360, (255,), -1, cv2.LINE_AA, shift=2)
    finger_w = 0.2 * palm_w
    for k, length in enumerate((0.45, 0.55, 0.5, 0.4)):
        fx = cx + (k - 1.5) * 0.24 * palm_w
        top = cy - 0.45 * palm_w - length * palm_w
        p0 = (int(round(fx * scale)), int(round((cy - 0.3 * palm_w) * scale)))
        p1 = (int(round(fx * scale)), int(round(top * scale)))
        cv2.line(mask, p0, p1, (255,), max(1, int(round(finger_w))), cv2.LINE_AA, shift=2)
    return cv2.GaussianBlur(mask, (0, 0), 1.0).astype(np.float32) / 255.0


def paint_hand(
    frame: np.ndarray, face2d: np.ndarray, u: float, *, hand: Hand, colour: tuple[int, int, int]
) -> bool:
    """Paint the hand into ``frame`` (H, W, 3) uint8 in place; True when it covers any of
    the face's projected points ``face2d`` (478, 2)."""
    h, w = frame.shape[:2]
    alpha = hand_mask((w, h), face2d, u, size=hand.size)
    ys, xs = np.nonzero(alpha > 0)
    if len(ys) == 0:
        return False
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = alpha[y0:y1, x0:x1, None]
    rows = np.arange(y0, y1, dtype=np.float32)[:, None, None]
    shade = 0.9 + 0.1 * np.cos((rows - y0) / max(y1 - y0, 1) * np.pi)  # a little shading
    rgb = np.asarray(colour, np.float32) * shade
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - a) + rgb * a, 0, 255).astype(np.uint8)
    px = np.round(face2d).astype(int)
    inside = (px[:, 0] >= 0) & (px[:, 0] < w) & (px[:, 1] >= 0) & (px[:, 1] < h)
    return bool((alpha[px[inside, 1], px[inside, 0]] > 0.5).any())
