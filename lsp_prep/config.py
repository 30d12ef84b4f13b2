"""The resolved configuration of ``lsp prep``: one frozen dataclass per stage."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from lsp_prep import configtree
from lsp_prep.constants import FPS, IMAGE_SIZE, SAMPLE_RATE
from lsp_prep.errors import InputError
from lsp_prep.stages.audio import MelConfig
from lsp_prep.stages.candidates import CandidateConfig, SplitConfig
from lsp_prep.stages.crop import CropConfig
from lsp_prep.stages.features.measure import FeatureConfig
from lsp_prep.stages.geometry.config import CameraConfig, GeometryConfig
from lsp_prep.stages.shoulders.config import ShoulderConfig
from lsp_prep.stages.track import TrackConfig


@dataclass(frozen=True)
class IngestConfig:
    """Decoding, resampling and storage of frames and audio."""

    fps: int = FPS
    """Constant output frame rate; frames are picked by timestamp."""
    sample_rate: int = SAMPLE_RATE
    """Output audio rate (Hz), mono."""
    image_size: int = IMAGE_SIZE
    """Side of the square face crop (pixels)."""
    jpeg_quality: int = 92
    """JPEG quality of stored frames (1-100); 92 keeps 5 min at 60 FPS well under 1.5 GB."""
    min_duration_s: float = 1.0
    """Shorter clips are refused: the models need at least one 18-frame look-ahead window
    plus context, and the tracker needs frames to settle."""
    av_offset_ms: float = 0.0
    """Move the speech this many milliseconds earlier against the frames (negative: later),
    to fix a recording whose sound is late; prep's sync warning prints the value to use."""
    av_max_lag_ms: float = 500.0
    """The audio-visual sync check searches offsets up to this far either way (ms)."""
    av_warn_frames: float = 2.0
    """Warn when the measured audio-visual offset exceeds this many video frames."""
    av_min_confidence: float = 4.0
    """Sync confidence (z-score of the correlation peak, lsp_prep.stages.sync) below which
    the speech is reported as not following the lips: on a render driven by real speech
    it is 7-8, with an unrelated stretch of speech 1.5-2."""

    def __post_init__(self) -> None:
        if self.fps <= 0 or self.sample_rate <= 0:
            raise InputError("ingest.fps and ingest.sample_rate must be positive")
        if not 64 <= self.image_size <= 2048:
            raise InputError(f"ingest.image_size must be in [64, 2048], got {self.image_size}")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"ingest.jpeg_quality must be in [1, 100], got {self.jpeg_quality}")
        if self.min_duration_s < 0:
            raise InputError("ingest.min_duration_s must be >= 0")
        if not abs(self.av_offset_ms) <= 10_000:
            raise InputError(f"ingest.av_offset_ms must be within +-10000, got {self.av_offset_ms}")
        if not 0 < self.av_max_lag_ms <= 2000:
            raise InputError(f"ingest.av_max_lag_ms must be in (0, 2000], got {self.av_max_lag_ms}")
        if self.av_warn_frames < 0 or self.av_min_confidence < 0:
            raise InputError("ingest.av_warn_frames and ingest.av_min_confidence must be >= 0")


@dataclass(frozen=True)
class PrepConfig:
    """Every stage of ``lsp prep``."""

    ingest: IngestConfig = field(default_factory=IngestConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    shoulders: ShoulderConfig = field(default_factory=ShoulderConfig)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    split: SplitConfig = field(default_factory=SplitConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrepConfig:
        """Build from nested plain data (e.g. a dataset's stored config); unknown keys fail."""
        return configtree.from_data(cls, data)

    def with_overrides(self, items: list[str]) -> PrepConfig:
        """Apply ``section.key=value`` overrides, values parsed by the field's type."""
        return configtree.with_overrides(self, items, see="see `lsp prep --help`")

    def digest(self, *sections: str) -> str:
        """Short stable hash of the named sections (all when none), for stage caches."""
        d = self.to_dict()
        chosen = {k: d[k] for k in (sections or tuple(d))}
        return hashlib.sha256(json.dumps(chosen, sort_keys=True).encode()).hexdigest()[:16]
