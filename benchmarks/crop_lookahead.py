"""How far a crop placed while tracking would move the dataset's landmarks (issue 13 item 1).

    python benchmarks/crop_lookahead.py [--clips pexels,carphone]

Decoding each frame once means cutting its crop while tracking goes on, with only a bounded
window of frames ahead in memory. Today's crop boxes use the whole clip: the side is
``crop.scale`` times the clip's median face size, and the centre is smoothed by a Gaussian
(sigma ``crop.smoothing_s``) that scipy cuts at 4 sigma, i.e. 4 s ahead. This prints, for
real clips tracked as prep tracks them, how far the landmarks in crop pixels (what the
dataset stores) move when the side comes from the first seconds only and the smoothing
looks less far ahead. The issue's tolerance on landmarks is 0.5 px.
"""

from __future__ import annotations

import argparse

import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.ndimage import gaussian_filter1d

from lsp_prep.camera import boxes_at, keep_inside, to_crop
from lsp_prep.config import PrepConfig
from lsp_prep.media import probe
from lsp_prep.stages.crop import crop_boxes, face_extent
from lsp_prep.stages.track import clean_tracks, track_video
from lsp_synth.samples import fetch

console = Console(width=110)

VARIANTS = ((None, 4.0), (None, 3.0), (None, 2.0), (5.0, 4.0), (2.0, 4.0), (5.0, 3.0))
"""(seconds the side is measured on, None: the whole clip; look-ahead in seconds)."""


def causal_boxes(
    centres: np.ndarray,
    sizes: np.ndarray,
    valid: np.ndarray,
    *,
    side_s: float | None,
    ahead_s: float,
    fps: int,
    frame_size: tuple[int, int],
    config: PrepConfig,
) -> np.ndarray:
    """crop_boxes with the side from the first ``side_s`` seconds and the smoothing cut at
    ``ahead_s`` seconds ahead (and behind)."""
    crop = config.crop
    seen = valid.copy()
    if side_s is not None:
        seen[int(side_s * fps) :] = False
    side = min(crop.scale * float(np.median(sizes[seen])), float(min(frame_size)))
    t, good = np.arange(len(valid)), np.flatnonzero(valid)
    c = np.stack([np.interp(t, good, centres[good, k]) for k in range(2)], axis=1)
    c[:, 1] += crop.offset_y * side
    sigma = crop.smoothing_s * fps
    c = gaussian_filter1d(c, sigma=sigma, axis=0, mode="nearest", truncate=ahead_s * fps / sigma)
    return boxes_at(keep_inside(c, side, frame_size), side)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--clips", default="pexels,carphone")
    args = ap.parse_args()
    config = PrepConfig()
    fps, size = config.ingest.fps, config.ingest.image_size
    table = Table(title="crop-pixel landmarks moved by a causal crop, against today's boxes")
    for col in ("clip", "side from", "look-ahead (s)", "side (px)", "mean (px)", "max (px)"):
        table.add_column(col, justify="left" if col == "clip" else "right")
    for name in args.clips.split(","):
        console.print(f"{name}: tracking ...")
        path = fetch(name)
        info = probe(path)
        frame = (info.width, info.height)
        tracks = track_video(path, info, fps=fps, config=config.track)
        mesh, masks = clean_tracks(tracks, fps=fps, config=config.track, source=name)
        valid = masks["valid"]
        centres, sizes = face_extent(mesh)
        today = crop_boxes(centres, sizes, valid, fps=fps, frame_size=frame, config=config.crop)
        ref = to_crop(mesh, today, size)[valid, :, :2]
        label = f"{name} ({len(valid) / fps:.0f} s)"
        for side_s, ahead_s in VARIANTS:
            boxes = causal_boxes(
                centres,
                sizes,
                valid,
                side_s=side_s,
                ahead_s=ahead_s,
                fps=fps,
                frame_size=frame,
                config=config,
            )
            d = np.linalg.norm(to_crop(mesh, boxes, size)[valid, :, :2] - ref, axis=-1)
            table.add_row(
                label,
                "whole clip" if side_s is None else f"first {side_s:g} s",
                f"{ahead_s:g}",
                f"{boxes[0, 2] - boxes[0, 0]:.1f}",
                f"{d.mean():.2f}",
                f"{d.max():.2f}",
            )
            label = ""
    console.print(table)


if __name__ == "__main__":
    main()
