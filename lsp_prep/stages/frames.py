"""The frames stage of prep: decode again (pass 2), crop every frame to the face box,
JPEG-encode it into the partial dataset file. Resumable: a partial file whose frames
are complete for the same key is kept."""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np

from lsp_prep.config import IngestConfig
from lsp_prep.dataset import writer
from lsp_prep.errors import InputError
from lsp_prep.media import MediaInfo, iter_frames
from lsp_prep.progress import ProgressFn, no_progress
from lsp_prep.stages.crop import crop_frame


def frames_done(partial: Path, key: str) -> bool:
    """Whether ``partial`` holds every frame, written for ``key``."""
    if not partial.exists():
        return False
    try:
        with h5py.File(partial, "r") as f:
            return f.attrs.get("frames_key") == key and bool(f.attrs.get("frames_complete"))
    except OSError:
        return False


def write_frames(
    partial: Path,
    video: Path,
    info: MediaInfo,
    boxes: np.ndarray,
    key: str,
    *,
    config: IngestConfig,
    progress: ProgressFn = no_progress,
) -> None:
    """Crop, encode and store every frame in the partial file, unless already done."""
    n = len(boxes)
    if frames_done(partial, key):
        progress("frames", n, n)
        return
    partial.unlink(missing_ok=True)
    size, params = config.image_size, [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality]
    with h5py.File(partial, "w") as f:
        f.attrs["frames_key"] = key
        ds = writer.create_frames(f, n)
        writer.write_fields(f, {"crop/boxes": boxes.astype(np.float64)})
        batch: list[np.ndarray] = []
        start = 0
        # ffmpeg area-resamples each frame so the crop box is 1.25x the output size: the
        # pipe carries less and the final warp only shrinks a little. BGR for the encoder.
        src = (info.width, info.height)
        k = min(1.0, 1.25 * size / float(boxes[0, 2] - boxes[0, 0]))
        dec = (max(1, round(src[0] * k)), max(1, round(src[1] * k)))
        scale = (dec[0] / src[0], dec[1] / src[1])
        stream = iter_frames(video, fps=config.fps, size=src, out_size=dec, pix_fmt="bgr24")
        for i, frame in enumerate(stream):
            if i >= n:
                break  # ffmpeg is deterministic; never more frames than pass 1 saw
            crop = crop_frame(frame, boxes[i], size, frame_scale=scale)
            ok, buf = cv2.imencode(".jpg", crop, params)
            if not ok:
                raise RuntimeError("JPEG encoding failed")
            batch.append(buf.ravel())
            if len(batch) == writer.FRAMES_CHUNK:
                start = writer.write_frame_batch(ds, start, batch)
                batch = []
                progress("frames", start, n)
        if batch:
            start = writer.write_frame_batch(ds, start, batch)
        if start != n:
            raise InputError(f"{video}: second decoding pass gave {start} frames, first gave {n}")
        f.attrs["frames_complete"] = True
    progress("frames", n, n)


def decode_rgb(jpeg: np.ndarray) -> np.ndarray:
    """One stored frame (JPEG bytes) -> (H, W, 3) uint8 RGB."""
    return cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


GREY_AT_SCALE = {
    1.0: cv2.IMREAD_GRAYSCALE,
    0.5: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    0.25: cv2.IMREAD_REDUCED_GRAYSCALE_4,
}
"""cv2.imdecode flag that decodes a stored frame to grey at a scale (JPEG decodes at 1,
1/2 and 1/4 size directly)."""
