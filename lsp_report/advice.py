"""What to do about each of prep's warnings: the report shows the advice beside each one."""

from __future__ import annotations

ADVICE: tuple[tuple[str, str], ...] = (
    (
        "does not follow the lips",
        "check that the speech is this video's own recording (--audio): a wrong or "
        "unrelated track trains a mouth that does not follow the voice. If it is right, "
        "the face may be too small or mostly silent; the report's sync curve shows it.",
    ),
    (
        "the lips (sync confidence",
        "re-run prep with the --set ingest.av_offset_ms value the warning gives; the audio "
        "is then moved by that much and the check runs again. Lip sync learned from "
        "offset audio is late or early by the same amount.",
    ),
    (
        "nearly silent",
        "the speech track carries no voice: pass the recording with --audio.",
    ),
    (
        "focal length not identified",
        "the head turned too little to measure the lens; a default field of view was used. "
        "Poses stay usable. To identify it, film a few seconds turning the head left and "
        "right (about 15 degrees) in the same take.",
    ),
    (
        "shoulder",
        "widen the crop (--set crop.scale=...) so the shoulders are in view, or place the "
        "points yourself with --set shoulders.points=[[x,y],...] (crop pixels of frame 0).",
    ),
    (
        "landmark",
        "the head poses come from the landmarks alone on some or all frames; check the "
        "misfit plot, and light the face evenly (texture features need it).",
    ),
)
"""(phrase in the warning, advice): the first phrase found decides."""

DEFAULT = "see the README's Known limits, and the plots of this report for the frames concerned."


def advise(warning: str) -> str:
    """The advice for one of prep's warnings."""
    low = warning.lower()
    for phrase, advice in ADVICE:
        if phrase in low:
            return advice
    return DEFAULT
