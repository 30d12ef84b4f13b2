"""The animate settings: :class:`AnimateConfig` and RUN/animate.json, the person's copy.

``--set key=value`` overrides (typed by the field, :mod:`lsp_prep.configtree`) apply to
a copy. JSON outputs of animate and
eval are written atomically by :func:`write_json`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from lsp_prep import configtree
from lsp_prep.dataset.writer import atomic_output
from lsp_prep.errors import InputError

CONFIG_FILE = "animate.json"
"""Per-person animation settings in the run directory (written with the defaults on first use)."""


@dataclass(frozen=True)
class AnimateConfig:
    """Post-processing and rendering settings. Defaults: the official LSP inference configs
    (most of its five people use these values); smoothing sigmas are in 60 FPS frames."""

    mouth_sigma: float = 2.0
    """Gaussian sigma (frames) of the mouth displacements in time."""
    mouth_amp: tuple[float, float, float] = (1.5, 1.5, 1.5)
    """Amplification of the mouth displacements along object x, y, z."""
    rot_sigma: float = 5.0
    """Gaussian sigma (frames) of the head rotation (Euler angles)."""
    trans_sigma: float = 10.0
    """Gaussian sigma (frames) of the head translation."""
    rot_amp: float = 1.0
    """Amplification of the sampled rotation about the person's mean rotation."""
    trans_amp: float = 1.0
    """Amplification of the sampled translation about the person's mean translation."""
    shoulder_amp: float = 0.5
    """The shoulder billboard moves by this fraction of the head translation."""
    truncate: float = 4.0
    """Gaussian kernels reach ``truncate * sigma`` frames each way (scipy's default)."""
    camera_lookahead_s: float = 0.3
    """The crop centre is smoothed like prep's (sigma ``crop.smoothing_s`` of the dataset)
    but looks at most this far ahead, so streaming latency stays bounded."""
    max_lookahead_s: float | None = None
    """Low-latency mode: no frame waits for more than this much audio beyond its own end
    (at least the mouth model's delay, 0.3 s). The smoothing kernels' future sides are cut
    to fit (the mouth's after the delay, then half for the pose and half for the camera);
    their past sides stay whole. None: the official symmetric smoothing (~1 s look-ahead
    with the default sigmas). Offline and streaming agree either way."""
    lle_k: int = 10
    """Nearest neighbours of the manifold projection."""
    lle_blend: float = 1.0
    """1: fully projected features (the paper); 0: raw APC features."""
    render_batch: int = 4
    """Frames per renderer call."""
    precision: Literal["float32", "bfloat16"] = "float32"
    """Renderer arithmetic: bfloat16 autocast is faster on recent CPUs and GPUs."""
    crf: int = 18
    """H.264 constant rate factor (lower is better quality)."""
    preset: str = "veryfast"
    """x264 speed preset."""

    def __post_init__(self) -> None:
        for name in ("mouth_sigma", "rot_sigma", "trans_sigma", "camera_lookahead_s"):
            if not getattr(self, name) >= 0:
                raise InputError(f"animate.{name} must be >= 0, got {getattr(self, name)}")
        if self.max_lookahead_s is not None and not self.max_lookahead_s >= 0:
            raise InputError(f"animate.max_lookahead_s must be >= 0, got {self.max_lookahead_s}")
        if len(self.mouth_amp) != 3:
            raise InputError(f"animate.mouth_amp must be 3 numbers, got {self.mouth_amp}")
        if self.truncate <= 0 or self.lle_k < 1 or self.render_batch < 1:
            raise InputError("animate.truncate, lle_k and render_batch must be positive")
        if not 0 <= self.lle_blend <= 1:
            raise InputError(f"animate.lle_blend must be in [0, 1], got {self.lle_blend}")
        if self.precision not in ("float32", "bfloat16"):
            raise InputError(f"animate.precision must be float32 or bfloat16, got {self.precision}")
        if not 0 <= self.crf <= 51:
            raise InputError(f"animate.crf must be in [0, 51], got {self.crf}")

    def with_overrides(self, items: list[str]) -> AnimateConfig:
        """``key=value`` strings (``animate.`` prefix allowed; values typed by the field, e.g.
        ``mouth_amp=[2,2,2]``) applied to a copy."""
        return configtree.with_overrides(
            self, items, root="animate", what="--set", see="see `lsp animate --help`"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnimateConfig:
        """From plain data (RUN/animate.json); unknown keys are refused."""
        return configtree.from_data(cls, data, where="animate")


def resolve_config(
    run_dir: Path, overrides: list[str] | None = None, *, write_defaults: bool = True
) -> AnimateConfig:
    """RUN/animate.json (the person's settings) with ``--set`` overrides applied; when the
    file is missing, the defaults, which are written there (unless ``write_defaults`` is
    False) only after the overrides were accepted."""
    path = Path(run_dir) / CONFIG_FILE
    if path.is_file():
        try:
            base = AnimateConfig.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError, InputError) as exc:
            raise InputError(f"{path}: not a valid animate config ({exc})") from None
        return base.with_overrides(overrides or [])
    base = AnimateConfig()
    config = base.with_overrides(overrides or [])
    if write_defaults:
        try:
            write_json(path, dataclasses.asdict(base))
        except OSError:
            pass  # a read-only run directory still animates with the defaults
    return config


def write_json(path: Path, data: dict[str, Any], *, allow_nan: bool = True) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically (a temporary sibling renamed when
    complete); its folder is made when missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, allow_nan=allow_nan) + "\n"
    with atomic_output(path) as tmp:
        tmp.write_text(text)
