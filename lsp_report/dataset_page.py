"""The page sections of the dataset report, one function per section, in reading order."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from lsp_prep.progress import ProgressFn, no_progress
from lsp_prep.stages.sync import detrended, lip_opening, speech_activity
from lsp_report import images
from lsp_report.dataset import (
    CONTACT_FRAMES,
    STRIP_FRAMES,
    DatasetData,
    crop_jitter,
    euler_deg,
    frame_jpegs,
)
from lsp_report.page import Section, jpeg_uri, kpis, png_uri
from lsp_report.plots import COLORS, figure, legend, runs, shade

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def dataset_sections(
    data: DatasetData, numbers: dict[str, Any], *, progress: ProgressFn = no_progress
) -> list[Section]:
    """The page sections of a dataset, in reading order."""
    makers = [
        lambda: overview_section(data, numbers),
        lambda: warnings_section(data, numbers),
        lambda: frames_section(data),
        lambda: pose_section(data, numbers),
        lambda: camera_section(data, numbers),
        lambda: shoulders_section(data, numbers),
        lambda: sync_section(data, numbers),
        lambda: candidates_section(data),
        lambda: split_section(data, numbers),
    ]
    sections = []
    for k, make in enumerate(makers):
        progress("figures", k, len(makers))
        sections.append(make())
    progress("figures", len(makers), len(makers))
    return sections


def overview_section(data: DatasetData, nb: dict[str, Any]) -> Section:
    lm, sync = nb["landmarks"], nb["sync"]
    s = Section("Overview", "overview")
    s.raw(
        kpis(
            [
                (f"{nb['duration_s']:.1f} s", f"{nb['frames']} frames at {nb['fps']:g} FPS"),
                (f"{lm['valid_fraction']:.1%}", "frames with landmarks"),
                ("yes" if nb["camera"]["identified"] else "no", "focal length identified"),
                (f"{nb['misfit_px']['median']:.2f} px", "median rigid misfit"),
                (f"{nb['shoulders']['valid_fraction']:.0%}", "shoulder points tracked"),
                (
                    f"{sync['offset_ms']:+.0f} ms" if sync["reliable"] else "no sync found",
                    f"audio vs lips (confidence {sync['confidence']:.1f})",
                ),
                (str(len(nb["warnings"] or [])), "warnings"),
            ]
        )
    )
    s.table(
        [
            ("file", str(data.path)),
            ("source video", nb["source_path"]),
            ("crop", f"{nb['image_size']} x {nb['image_size']} px"),
            (
                "landmarks",
                f"{lm['detected_fraction']:.1%} detected, "
                f"{lm['interpolated_frames']} frames interpolated",
            ),
            ("schema / toolkit", f"{nb['schema_version']} / {nb['lsp_version']}"),
        ]
    )
    s.details("resolved prep configuration", json.dumps(data.config, indent=2))
    return s


def warnings_section(data: DatasetData, nb: dict[str, Any]) -> Section:
    s = Section("Warnings", "warnings")
    ws = nb["warnings"]
    if ws is None:
        s.text(
            "This file was written before prep stored its warnings; re-run `lsp prep` "
            "(--force) to see them here. The checks below still apply.",
            css="muted",
        )
    elif not ws:
        s.text("Prep raised no warnings for this clip.", css="ok")
    else:
        s.items([(w["warning"], "What to do: " + w["advice"]) for w in ws], css="warnings")
    return s


def frames_section(data: DatasetData) -> Section:
    s = Section("Frames, landmarks and feature map", "frames")
    picks = images.spread_frames(data.valid, CONTACT_FRAMES)
    sheet = images.contact_sheet(data, picks, frame_jpegs(data.path, picks))
    s.image(
        jpeg_uri(sheet),
        alt="contact sheet",
        caption="Frames spread over the clip: the 73 landmarks (dots) and the feature map "
        "the renderer is conditioned on (cyan lines: the tracked 3D landmarks projected, "
        "and the shoulders). Lines off the face mean a bad track.",
    )
    start = images.strip_start(data.valid, STRIP_FRAMES)
    strip_frames = np.arange(start, start + STRIP_FRAMES)
    strip = images.strip(frame_jpegs(data.path, strip_frames), strip_frames, fps=data.fps)
    s.image(
        jpeg_uri(strip),
        alt="consecutive crops",
        caption=f"{STRIP_FRAMES} consecutive crops: the face should stay put (the crop "
        "centre is smoothed over 1 s).",
    )
    s.image(png_uri(crop_figure(data)), alt="crop boxes over time")
    return s


def crop_figure(data: DatasetData) -> Figure:
    """The crop box's centre and side over time, minus their medians."""
    fig, (ax,) = figure(10, 2.2)
    t = data.times
    centre = (data.boxes[:, :2] + data.boxes[:, 2:]) / 2
    ax.plot(t, centre[:, 0] - np.median(centre[:, 0]), lw=1, label="centre x")
    ax.plot(t, centre[:, 1] - np.median(centre[:, 1]), lw=1, label="centre y")
    side = data.boxes[:, 2] - data.boxes[:, 0]
    ax.plot(t, side - np.median(side), lw=1, label="side")
    ax.set_title(
        f"Crop box minus its median (original px); jitter {crop_jitter(data.boxes):.3f} px/frame²"
    )
    ax.set_xlabel("time (s)")
    legend(ax, ncol=3)
    return fig


def pose_section(data: DatasetData, nb: dict[str, Any]) -> Section:
    s = Section("Head pose", "pose")
    fig, axes = figure(10, 5.2, nrows=3, sharex=True)
    t, e = data.times, euler_deg(data)
    refined = data.source == 1
    measured = data.n_features > 0
    for k, name in enumerate(("pitch", "yaw", "roll")):
        axes[0].plot(t, e[:, k], lw=1, label=name)
    axes[0].set_ylabel("degrees")
    axes[0].set_title("Rotation (xyz Euler angles)")
    tr = np.where(data.valid[:, None], data.translation, np.nan)
    for k, name in enumerate("xyz"):
        axes[1].plot(t, tr[:, k] - np.nanmedian(tr[:, k]), lw=1, label=f"T{name}")
    axes[1].set_ylabel("cm from median")
    axes[1].set_title("Translation")
    for ax in axes[:2]:
        shade(ax, refined, fps=data.fps, color="#2aa876", alpha=0.08, label="texture-refined")
        legend(ax, ncol=4)
    ax = axes[2]
    ax.plot(t, np.where(data.valid, data.misfit, np.nan), lw=0.9, color=COLORS[3], label="misfit")
    ax.scatter(
        t[measured],
        np.zeros(int(measured.sum())),
        s=3,
        marker="|",
        color=COLORS[2],
        label="measured on texture",
    )
    ax.set_ylim(bottom=-0.2)
    ax.set_ylabel("crop px")
    ax.set_title("Rigid misfit of the posed mean shape to the landmarks")
    ax.set_xlabel("time (s)")
    legend(ax, ncol=2)
    pose = nb["pose"]
    s.raw(
        kpis(
            [
                (
                    f"{pose['euler_p5_deg'][k]:.0f}..{pose['euler_p95_deg'][k]:.0f}°",
                    f"{k} (5-95 %)",
                )
                for k in ("pitch", "yaw", "roll")
            ]
            + [
                (f"{pose['source_fraction']['texture-refined']:.0%}", "frames texture-refined"),
                (str(pose["measured_frames"]), "frames measured on texture"),
                (f"{nb['misfit_px']['p90']:.2f} px", "misfit p90"),
            ]
        )
    )
    s.image(
        png_uri(fig),
        alt="head pose over time",
        caption="Green shading: poses refined on the upper face's texture (the rest come "
        "from the landmarks); ticks: frames measured on texture. A misfit far above its "
        "median marks frames whose pose does not explain the landmarks.",
    )
    return s


def camera_section(data: DatasetData, nb: dict[str, Any]) -> Section:
    cam = nb["camera"]
    s = Section("Focal length", "camera")
    fig, (ax,) = figure(7, 2.8)
    curve = data.focal_search[np.argsort(data.focal_search[:, 0])]
    if len(curve):
        ax.plot(curve[:, 0], curve[:, 1], "o-", ms=3, lw=1)
    ax.axvline(cam["focal_px"], color=COLORS[1], lw=1.5, label=f"chosen {cam['focal_px']:.0f} px")
    ax.set_xscale("log")
    ax.set_xlabel("focal length (original px, log scale)")
    ax.set_ylabel("RMS reprojection error (px)")
    state = "identified" if cam["identified"] else "not identified"
    ax.set_title(f"Focal search: {state}")
    legend(ax)
    s.raw(
        kpis(
            [
                (f"{cam['focal_px']:.0f} px", "focal length"),
                (f"{cam['horizontal_fov_deg']:.1f}°", "horizontal field of view"),
                (state, cam["reason"] or "calibration"),
            ]
        )
    )
    s.image(
        png_uri(fig),
        alt="focal search curve",
        caption="Every focal length the calibration tried and its error. A clear minimum "
        "identifies the focal length; a flat curve means the head turned too little.",
    )
    return s


def shoulders_section(data: DatasetData, nb: dict[str, Any]) -> Section:
    s = Section("Shoulders", "shoulders")
    p = data.shoulders2d.shape[1]
    if p == 0:
        return s.text("No shoulder points in this dataset.", css="muted")
    fig, axes = figure(10, 3.8, nrows=2, sharex=True)
    t = data.times
    for k in range(p):
        y = np.where(data.shoulders_valid[:, k], data.shoulders2d[:, k, 1], np.nan)
        axes[0].plot(t, y, lw=1, color=COLORS[k % len(COLORS)])
    axes[0].invert_yaxis()
    axes[0].set_ylabel("y (crop px)")
    axes[0].set_title("Shoulder points, height in the crop where tracked")
    ax = axes[1]
    for k in range(p):
        spans = [(a / data.fps, n / data.fps) for a, n in runs(data.shoulders_valid[:, k])]
        ax.broken_barh(spans, (k - 0.4, 0.8), color=COLORS[k % len(COLORS)])
    ax.set_yticks(range(p))
    ax.set_yticklabels([f"{k}" for k in range(p)])
    ax.set_ylim(p - 0.5, -0.5)
    ax.set_ylabel("point")
    ax.set_xlim(0, data.n / data.fps)
    ax.set_xlabel("time (s)")
    ax.set_title("Validity: tracked and checked (bars) or lost (gaps)")
    ax.grid(False)
    sh = nb["shoulders"]
    s.raw(
        kpis(
            [
                (str(sh["points"]), f"points ({sh['source'] or 'chosen automatically'})"),
                (f"{sh['valid_fraction']:.0%}", "point-frames tracked"),
            ]
        )
    )
    s.image(png_uri(fig), alt="shoulder tracks")
    return s


def sync_section(data: DatasetData, nb: dict[str, Any]) -> Section:
    s = Section("Audio-visual sync", "sync")
    sync = data.sync
    fig, axes = figure(10, 4.6, nrows=2)
    ok = data.valid & np.isfinite(lip_opening(data.points3d))
    lips = detrended(lip_opening(data.points3d), ok, fps=data.fps)
    act = speech_activity(data.waveform, sr=data.sr, fps=data.fps, n_frames=data.n)
    act = detrended(act, ok, fps=data.fps)
    window = min(data.n, int(10 * data.fps))
    start = images.loudest_window(act, window)
    t = data.times[start : start + window]

    def z(x: np.ndarray) -> np.ndarray:
        return np.where(ok, x, np.nan)[start : start + window]

    ax = axes[0]
    ax.plot(t, z(lips), lw=1.1, label="lip opening")
    ax.plot(t, z(act), lw=1.0, alpha=0.8, label="speech energy (300-3000 Hz)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("z-score")
    ax.set_title("Lip opening and speech energy (trends removed)")
    legend(ax, ncol=2)
    ax = axes[1]
    if len(sync.curve) and np.isfinite(sync.curve).any():
        ax.plot(sync.lags_ms, sync.curve, lw=1.2)
        frame_ms = 1000 / data.fps
        ax.axvspan(
            -2 * frame_ms, 2 * frame_ms, color="#2aa876", alpha=0.12, lw=0, label="±2 frames"
        )
        if np.isfinite(sync.offset_ms):
            ax.axvline(
                sync.offset_ms,
                color=COLORS[1] if sync.reliable else "#9aa3b0",
                lw=1.5,
                ls="-" if sync.reliable else "--",
                label=f"{'peak' if sync.reliable else 'highest, unreliable'} "
                f"{sync.offset_ms:+.0f} ms",
            )
        legend(ax)
    ax.set_xlabel("lag: speech after lips (ms)")
    ax.set_ylabel("correlation")
    side = "after" if sync.offset_ms > 0 else "before"
    verdict = (
        f"speech {abs(sync.offset_ms):.0f} ms {side} the lips"
        if sync.reliable
        else "no reliable sync: the speech does not follow the lips"
    )
    ax.set_title(f"Correlation by lag: {verdict}")
    sn = nb["sync"]
    s.raw(
        kpis(
            [
                (
                    f"{sn['offset_ms']:+.0f} ms" if sn["reliable"] else "none reliable",
                    "offset (speech after lips)",
                ),
                (f"{sn['confidence']:.1f}", "confidence (z; reliable from 4)"),
                (f"{sn['correlation']:.2f}", "peak correlation"),
                (f"{sn['applied_offset_ms']:+.0f} ms", "shift applied (ingest.av_offset_ms)"),
            ]
        )
    )
    if not data.sync_stored:
        s.text("This file predates the stored sync check: measured now.", css="muted")
    s.image(
        png_uri(fig),
        alt="lip opening against speech energy",
        caption="A sharp peak near 0 ms means the audio is in sync; a peak elsewhere is an "
        "offset to fix with --set ingest.av_offset_ms=<peak>; a flat curve means this is "
        "probably not the person's speech.",
    )
    return s


def candidates_section(data: DatasetData) -> Section:
    s = Section("Candidate images", "candidates")
    labels = ("smallest mouth", "largest mouth", "pose sample 1", "pose sample 2")
    row = images.labelled_row(
        list(data.candidates),
        [f"{lab}: frame {int(i)}" for lab, i in zip(labels, data.candidate_frames, strict=False)],
        side=256,
    )
    s.image(
        jpeg_uri(row),
        alt="candidate images",
        caption="The four images the renderer copies appearance from: mouth closed and "
        "open, and two head poses.",
    )
    return s


def split_section(data: DatasetData, nb: dict[str, Any]) -> Section:
    s = Section("Split and landmark coverage", "split")
    fig, (ax,) = figure(10, 1.9)
    rows = [
        ("train", np.isin(np.arange(data.n), data.train), COLORS[0]),
        ("val", np.isin(np.arange(data.n), data.val), COLORS[1]),
        ("detected", data.detected, COLORS[2]),
        ("interpolated", data.interpolated, COLORS[4]),
        ("texture pose", data.source == 1, COLORS[3]),
    ]
    for k, (_, mask, color) in enumerate(rows):
        spans = [(a / data.fps, n / data.fps) for a, n in runs(mask)]
        ax.broken_barh(spans, (k - 0.38, 0.76), color=color)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([r[0] for r in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, data.n / data.fps)
    ax.set_xlabel("time (s)")
    ax.set_title("Train / val split, landmarks and texture poses over time")
    ax.grid(False)
    sp = nb["split"]
    s.text(
        f"{sp['n_train']} training frames, {sp['n_val']} validation frames; the frames "
        "between belong to neither, so neighbouring frames never leak across."
    )
    s.image(png_uri(fig), alt="split timeline")
    return s
