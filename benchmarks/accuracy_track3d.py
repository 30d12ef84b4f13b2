"""Focal length and head-rotation accuracy of `lsp prep` on 3D renders with known camera
and motion, and self-consistency on real clips, with and without the texture features.

    python benchmarks/accuracy_track3d.py [--out DIR] [--skip-renders] [--skip-real]

Each render is a real photo's face mesh, textured from the photo, moving by sinusoids
(yaw, pitch, roll, translation) with a mouth driven by real speech:

* ``test``: the render of tests/test_track3d.py: f = 500 px, 640x360, 30 fps, 5 s,
  +-30 degrees of yaw and +-20 of pitch;
* ``narrow``: a longer lens and smaller turns: f = 1100 px, 960x540, 30 fps, 8 s,
  +-20 degrees of yaw and +-12 of pitch, another motion seed;
* ``long``: the render of issue 11's first measurement: f = 1400 px, 1280x720, 30 fps,
  20 s, +-28 degrees of yaw and +-12 of pitch at 100 cm (a user's clip is minutes long; 5 s
  turning once or twice fix f to no better than about 6 %, as ``test``'s interval shows);
* ``expressive``: f = 900 px, 960x540, 30 fps, 10 s, +-35 degrees of yaw and +-15 of
  pitch at 80 cm, the face deformed every frame by the expressions of the real pexels
  clip (lsp_synth.expression: blinks, brows, smiles, speech; the skull rigid), and a hand
  crossing the lower face from 4 to 5.5 s. The truth is the skull's pose.

Each is prepped twice: as shipped, and with ``features.enabled=false`` (the landmark-only
track of earlier versions). For each the table prints the focal length found, whose it
is (features, landmarks, or the default field of view when neither identifies it) with
the 95 % interval of the stored curve's minimum and of the landmarks' (camera attributes
``focal_source``, ``focal_interval``, ``focal_interval_landmarks``), the rotation error
after removing the constant offset between the object frames (median and 90th
percentile, degrees) and the slope of estimated against true Euler angles (1 = the right
amplitude). The issue's targets: focal error <= 3 %,
median rotation error <= 1.

Real clips (no truth, issue 11): pexels with the first 20 s of the sample speech as
--audio (as the demo preps it), the same clip re-encoded (H.264 crf 18), mirrored
(hflip), single_face and carphone. For each: frames measured on texture (n_features > 0)
and frames whose pose is refined (track/source != 0); the rigid misfit (median / p90,
512-crop pixels: the poses against the stable landmarks, with the rigid shape that best
explains them under those poses, triangulated, so every track is judged the same way);
the dataset's track/reprojection_error (median / p90, original pixels: the figure issue
11 quotes); mirror consistency (rotations of the mirrored clip against the mirror image
of the original's, after the best single object-frame change, median / p90 degrees);
re-encode consistency (median rotation difference to pexels, degrees, as is and after
the best single object-frame change). Targets: misfit median <= 2, p90 <= 4 and never
more than 10 % above the landmark-only track; mirror median <= 2; re-encode <= 1.
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

console = Console(width=250)


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
    expressive: bool = False


RENDERS = (
    Render("test", 500.0, (640, 360), 5.0, 30.0, 20.0, 0, 60.0),
    Render("narrow", 1100.0, (960, 540), 8.0, 20.0, 12.0, 3, 110.0),
    # as the first measurement: 20 s at 1280x720, f = 1400, +-28 degrees of yaw
    Render("long", 1400.0, (1280, 720), 20.0, 28.0, 12.0, 1, 100.0),
    Render("expressive", 900.0, (960, 540), 10.0, 35.0, 15.0, 5, 80.0, expressive=True),
)


def render(spec: Render, out: Path) -> tuple[Path, np.ndarray]:
    """Render one clip; returns it and the true rotation (rotvec) of every source frame."""
    from lsp_prep.media import load_audio
    from lsp_synth import render3d as synth3d
    from lsp_synth.expression import Hand, clip_expressions
    from lsp_synth.mesh import face_model
    from lsp_synth.pinhole import Camera
    from lsp_synth.portraits import astronaut_portrait
    from lsp_synth.samples import fetch

    speech = load_audio(fetch("speech"), sr=16000)[8 * 16000 :]
    path = out / f"{spec.name}.mp4"
    expressive = {}
    if spec.expressive:  # the real clip's face moves the mouth: no jaw from the speech
        expressive = {
            "expressions": clip_expressions(fetch("pexels")),
            "hand": Hand(start_s=4.0, duration_s=1.5),
            "mouth_open_cm": 0.0,
        }
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
        **expressive,
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


def frame_change(a: Rotation, b: Rotation) -> Rotation:
    """The single rotation G that best maps ``a * G`` onto ``b`` (chordal mean, refined)."""
    g = (a.inv() * b).mean()
    for _ in range(3):
        g = g * ((a * g).inv() * b).mean()
    return g


def consistency(rot_a: np.ndarray, rot_b: np.ndarray, *, mirror: bool) -> np.ndarray:
    """Per-frame angle (degrees) between rotations ``rot_b`` and ``rot_a`` (N, 3) (mirrored
    about the image's vertical axis if ``mirror``) after the best single object-frame change."""
    m = np.diag([-1.0, 1.0, 1.0])
    a = Rotation.from_rotvec(rot_a)
    if mirror:
        a = Rotation.from_matrix(m @ a.as_matrix() @ m)
    b = Rotation.from_rotvec(rot_b)
    return np.degrees(((a * frame_change(a, b)).inv() * b).magnitude())


def real_clips(out: Path) -> dict[str, tuple[Path, Path]]:
    """The real clips (video, speech) of the table, made under ``out``."""
    from lsp_prep.media import run_ffmpeg
    from lsp_synth.samples import fetch

    pexels, voice = fetch("pexels"), out / "voice.wav"
    run_ffmpeg(["-y", "-i", str(fetch("speech")), "-t", "20", str(voice)])
    crf, mirror = out / "pexels_crf18.mp4", out / "pexels_mirror.mp4"
    run_ffmpeg(["-y", "-i", str(pexels), "-c:v", "libx264", "-crf", "18", "-an", str(crf)])
    hflip = ["-vf", "hflip", "-c:v", "libx264", "-crf", "12", "-an", str(mirror)]
    run_ffmpeg(["-y", "-i", str(pexels), *hflip])
    clips = {"pexels": pexels, "pexels_crf18": crf, "pexels_mirror": mirror}
    clips |= {k: fetch(k) for k in ("single_face", "carphone")}
    return {k: (v, voice) for k, v in clips.items()}


def real_scores(dataset: Path) -> dict[str, np.ndarray]:
    """What the table needs of one real clip's dataset."""
    from lsp_prep.camera import to_original
    from lsp_prep.layout import load_layout
    from lsp_prep.stages.geometry.quality import rigid_misfit
    from lsp_prep.stages.geometry.shape import triangulate

    stable = np.asarray(load_layout().sets["stable"])
    with h5py.File(dataset) as f:
        v = f["landmarks/valid"][:]
        rot = f["track/rotation"][:].astype(np.float64)
        trans = f["track/translation"][:].astype(np.float64)
        K = f["camera/intrinsics_original"][:]
        boxes = f["crop/boxes"][:]
        lm = to_original(f["landmarks/lsp73"][:].astype(np.float64), boxes, 512)[:, stable]
        n_feat = f["track/n_features"][:]
        source = f["track/source"][:] if "track/source" in f else (n_feat > 0).astype(np.int8)
        err = f["track/reprojection_error"][:]
        cam = f["camera"].attrs
        focal = float(K[0, 0])
        lo, hi = cam.get("focal_interval", (np.nan, np.nan))
        lo_l, hi_l = cam.get("focal_interval_landmarks", (np.nan, np.nan))
        whose = str(cam.get("focal_source", "?"))
    shape = triangulate(lm[v], rot[v], trans[v], K)
    misfit = rigid_misfit(rot[v], trans[v], shape, K, lm[v]) * 512 / (boxes[v, 2] - boxes[v, 0])
    return {
        "valid": v,
        "rotation": rot,
        "misfit": misfit,
        "reproj": err[v],
        "n_feat": n_feat,
        "source": source,
        "focal": np.array(focal),
        "focal_cell": np.array(f"{whose} ({lo:.0f}-{hi:.0f}; landmarks {lo_l:.0f}-{hi_l:.0f})"),
    }


def track_cells(g: dict[str, np.ndarray]) -> tuple[str, str, str]:
    """The frames, misfit and reprojection-error cells of one clip's row."""
    m, r, n = g["misfit"], g["reproj"], len(g["n_feat"])
    return (
        f"{int((g['n_feat'] > 0).sum())} / {int((g['source'] > 0).sum())} / {n}",
        f"{np.median(m):.2f} / {np.percentile(m, 90):.2f}",
        f"{np.nanmedian(r):.2f} / {np.nanpercentile(r, 90):.2f}",
    )


def real_rows(table: Table, out: Path) -> None:
    """Prep every real clip twice and add its rows to ``table``."""
    from lsp_prep.config import PrepConfig
    from lsp_prep.pipeline import prep_video

    clips = real_clips(out)
    for label, sets in (("landmarks only", ["features.enabled=false"]), ("prep", [])):
        got = {}
        for name, (video, voice) in clips.items():
            console.print(f"prep {name}, {label} ...")
            t = time.perf_counter()
            config = PrepConfig().with_overrides(sets)
            folder = out / label.split()[0]
            result = prep_video(
                video, out_dir=folder, config=config, audio=voice, name=name, force=True
            )
            got[name] = real_scores(result.dataset) | {"seconds": np.array(time.perf_counter() - t)}
        base = got["pexels"]
        for name, g in got.items():
            mirror = reenc = ""
            if name.startswith("pexels_"):  # the same frames as pexels
                v = g["valid"] & base["valid"]
            if name == "pexels_mirror":
                e = consistency(base["rotation"], g["rotation"], mirror=True)[v]
                mirror = f"{np.median(e):.2f} / {np.percentile(e, 90):.2f}"
            if name == "pexels_crf18":
                a, b = Rotation.from_rotvec(base["rotation"]), Rotation.from_rotvec(g["rotation"])
                raw = np.degrees((a.inv() * b).magnitude())[v]
                fixed = consistency(base["rotation"], g["rotation"], mirror=False)[v]
                reenc = f"{np.median(raw):.2f} ({np.median(fixed):.2f})"
            cells = ("", f"{g['focal']:.0f}", "", str(g["focal_cell"]), *("",) * 5)
            table.add_row(
                name, label, *cells, *track_cells(g), mirror, reenc, f"{g['seconds']:.0f}"
            )


COLUMNS = (
    "clip",
    "track",
    "true f",
    "found f",
    "f error",
    "f from (95 % interval)",
    "median deg",
    "p90 deg",
    "slope pitch",
    "slope yaw",
    "slope roll",
    "measured / refined / frames",
    "misfit crop px med / p90",
    "reproj err px med / p90",
    "mirror deg med / p90",
    "re-encode deg (frame fixed)",
    "seconds",
)


def render_rows(table: Table, out: Path) -> None:
    """Render every clip of :data:`RENDERS`, prep it twice and add its rows to ``table``."""
    from lsp_prep.config import PrepConfig
    from lsp_prep.pipeline import prep_video

    for spec in RENDERS:
        console.print(f"rendering {spec.name} ...")
        clip, true_rot = render(spec, out)
        for label, sets in (("landmarks only", ["features.enabled=false"]), ("prep", [])):
            console.print(f"prep {spec.name}, {label} ...")
            t = time.perf_counter()
            config = PrepConfig().with_overrides(sets)
            result = prep_video(clip, out_dir=out / label.split()[0], config=config, force=True)
            wall = time.perf_counter() - t
            g = real_scores(result.dataset)
            focal = float(g["focal"])
            valid = g["valid"]
            n = len(valid)
            src = np.clip(np.arange(n) // 2, 0, len(true_rot) - 1)  # 30 fps shown at 60
            s = scores(g["rotation"], Rotation.from_rotvec(true_rot[src]), valid)
            table.add_row(
                spec.name,
                label,
                f"{spec.focal:.0f}",
                f"{focal:.0f}",
                f"{focal / spec.focal - 1:+.1%}",
                str(g["focal_cell"]),
                f"{s['median']:.2f}",
                f"{s['p90']:.2f}",
                f"{s['slope_pitch']:.3f}",
                f"{s['slope_yaw']:.3f}",
                f"{s['slope_roll']:.3f}",
                *track_cells(g),
                "",
                "",
                f"{wall:.0f} (features {result.timings.get('features', 0.0):.1f})",
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: temporary)")
    ap.add_argument("--skip-renders", action="store_true", help="real clips only")
    ap.add_argument("--skip-real", action="store_true", help="renders only")
    args = ap.parse_args()
    table = Table(title="head tracks: 3D renders (truth) and real clips (self-consistency)")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("clip", "track") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        if not args.skip_renders:
            render_rows(table, out)
        if not args.skip_real:
            real_rows(table, out)
    console.print(table)
    console.print(
        "targets: renders focal error <= 3 %, median rotation error <= 1 degree; real clips "
        "misfit median <= 2 and p90 <= 4 px, <= 10 % above landmarks only, mirror median "
        "<= 2 degrees, re-encode <= 1 degree"
    )


if __name__ == "__main__":
    main()
