"""Focal length and head-rotation accuracy of `lsp prep` on 3D renders with known camera
and motion, with and without the texture features.

    python benchmarks/accuracy_track3d.py [--out DIR]

Each render is a real photo's face mesh, textured from the photo, moving by sinusoids
(yaw, pitch, roll, translation) with a mouth driven by real speech:

* ``test``: the render of tests/test_track3d.py: f = 500 px, 640x360, 30 fps, 5 s,
  +-30 degrees of yaw and +-20 of pitch;
* ``narrow``: a longer lens and smaller turns: f = 1100 px, 960x540, 30 fps, 8 s,
  +-20 degrees of yaw and +-12 of pitch, another motion seed.

Each is prepped twice: as shipped, and with ``features.enabled=false`` (the landmark-only
track of earlier versions). For each the table prints the focal length found, the
rotation error after removing the constant offset between the object frames (median and
90th percentile, degrees) and the slope of estimated against true Euler angles (1 = the
right amplitude). The issue's targets: focal error <= 3 %, median rotation error <= 1.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from rich.console import Console
from rich.table import Table
from scipy.spatial.transform import Rotation

console = Console(width=160)


@dataclass(frozen=True)
class Render:
    name: str
    focal: float
    size: tuple[int, int]
    seconds: float
    yaw: float
    pitch: float
    seed: int
    distance_cm: float


RENDERS = (
    Render("test", 500.0, (640, 360), 5.0, 30.0, 20.0, 0, 60.0),
    Render("narrow", 1100.0, (960, 540), 8.0, 20.0, 12.0, 3, 110.0),
)


def render(spec: Render, out: Path) -> tuple[Path, np.ndarray]:
    """Render one clip; returns it and the true rotation (rotvec) of every source frame."""
    from lsp_prep.media import load_audio
    from lsp_synth import render3d as synth3d
    from lsp_synth.mesh import face_model
    from lsp_synth.pinhole import Camera
    from lsp_synth.portraits import astronaut_portrait
    from lsp_synth.samples import fetch

    speech = load_audio(fetch("speech"), sr=16000)[8 * 16000 :]
    path = out / f"{spec.name}.mp4"
    truth = synth3d.render_head_clip(
        path,
        model=face_model(astronaut_portrait().image),
        camera=Camera(focal=spec.focal, size=spec.size),
        duration_s=spec.seconds,
        fps=30,
        motion=synth3d.HeadMotion(
            yaw_deg=spec.yaw, pitch_deg=spec.pitch, seed=spec.seed, distance_cm=spec.distance_cm
        ),
        audio=speech,
    )
    return path, truth.rotation


def scores(est_rotvec: np.ndarray, truth: Rotation, valid: np.ndarray) -> dict[str, float]:
    est = Rotation.from_rotvec(est_rotvec)
    gauge = (truth[valid].inv() * est[valid]).mean()  # object frames differ by a constant
    err = np.degrees(((truth * gauge).inv() * est).magnitude())[valid]
    te = (truth * gauge)[valid].as_euler("xyz", degrees=True)
    ee = est[valid].as_euler("xyz", degrees=True)
    slopes = [np.polyfit(te[:, a], ee[:, a], 1)[0] for a in range(3)]
    return {
        "median": float(np.median(err)),
        "p90": float(np.percentile(err, 90)),
        **{f"slope_{k}": float(s) for k, s in zip(("pitch", "yaw", "roll"), slopes, strict=True)},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: temporary)")
    args = ap.parse_args()
    from lsp_prep.config import PrepConfig
    from lsp_prep.pipeline import prep_video

    table = Table(title="head rotation and focal length on 3D renders")
    for col in (
        "render",
        "track",
        "true f",
        "found f",
        "f error",
        "median deg",
        "p90 deg",
        "slope pitch",
        "slope yaw",
        "slope roll",
        "features stage s",
    ):
        table.add_column(col, justify="left" if col in ("render", "track") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        for spec in RENDERS:
            console.print(f"rendering {spec.name} ...")
            clip, true_rot = render(spec, out)
            for label, sets in (("landmarks only", ["features.enabled=false"]), ("prep", [])):
                console.print(f"prep {spec.name}, {label} ...")
                t = time.perf_counter()
                config = PrepConfig().with_overrides(sets)
                result = prep_video(clip, out_dir=out / label.split()[0], config=config, force=True)
                wall = time.perf_counter() - t
                with h5py.File(result.dataset) as f:
                    valid = f["landmarks/valid"][:]
                    focal = float(f["camera/intrinsics_original"][0, 0])
                    rotvec = f["track/rotation"][:].astype(np.float64)
                n = len(valid)
                src = np.clip(np.arange(n) // 2, 0, len(true_rot) - 1)  # 30 fps shown at 60
                truth = Rotation.from_rotvec(true_rot[src])
                s = scores(rotvec, truth, valid)
                table.add_row(
                    spec.name,
                    label,
                    f"{spec.focal:.0f}",
                    f"{focal:.0f}",
                    f"{focal / spec.focal - 1:+.1%}",
                    f"{s['median']:.2f}",
                    f"{s['p90']:.2f}",
                    f"{s['slope_pitch']:.3f}",
                    f"{s['slope_yaw']:.3f}",
                    f"{s['slope_roll']:.3f}",
                    f"{result.timings.get('features', 0.0):.1f} (prep {wall:.0f})",
                )
    console.print(table)
    console.print("targets (issue 3): focal error <= 3 %, median rotation error <= 1 degree")


if __name__ == "__main__":
    main()
