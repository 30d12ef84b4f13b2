"""Audio to mouth: speech features -> mouth-related 3D displacements dv_m (25 x 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from lsp_models.train.augment import SpeechAugment
from lsp_prep.errors import InputError


@dataclass(frozen=True)
class MouthConfig:
    """LSTM 3x256 + MLP 256/512/75, as in the paper."""

    audio_dim: int = 1024
    """Input per video frame: two APC features concatenated."""
    hidden: int = 256
    """LSTM width."""
    n_layers: int = 3
    """LSTM layers."""
    mlp: tuple[int, ...] = (256, 512)
    """Hidden widths of the output MLP."""
    out_dim: int = 75
    """25 mouth points x 3."""
    delay: int = 18
    """Frames of look-ahead: output t predicts the mouth at t - delay (300 ms at 60 FPS)."""
    window: int = 240
    """Training window length in frames (T)."""
    dropout: float = 0.0
    normalise: Literal["none", "global", "coordinate"] = "none"
    """Scale of the targets in training: ``none`` (cm), ``global`` (divided by their RMS over
    the train split), ``coordinate`` (each coordinate by its own standard deviation). The
    scale is a buffer of the model, which multiplies its output back: it predicts cm."""
    depth: bool = True
    """Predict the depth (object z) of the displacements. Off (the presets), the z outputs
    are zero and the loss covers x and y only: the tracked depth of the mouth points is
    the detector's noise, not the mouth's motion. On a speech-driven render (150 s,
    benchmarks/lipsync.py) the tracked lower lip and jaw move in depth against the truth
    (r -0.55 to -0.72 per point) with 1.3-3.7x its amplitude, so a model of the targets'
    depth moves away from the truth. Without it, over five training seeds at cpu-small, the
    error against the truth on speakers never heard fell from 0.79-0.82x the mean baseline
    (mean 0.81) to 0.75-0.82x (mean 0.78), on the training speech from 0.62-0.63x to
    0.57-0.59x, lip-opening r 0.82-0.85 either way; the floor the targets set (their
    expected value given the true mouth) fell from 0.54x to 0.49x. True, the default, is
    how checkpoints written before it existed predict."""
    augment: SpeechAugment = field(default_factory=SpeechAugment)
    """Training on augmented copies of the person's speech (other voices, levels,
    microphones: :mod:`lsp_models.train.augment`); off by default, as before it existed."""

    def __post_init__(self) -> None:
        if min(self.audio_dim, self.hidden, self.n_layers, self.out_dim, self.window) < 1:
            raise InputError("mouth: sizes and window must be >= 1")
        if not 0 <= self.delay < self.window:
            raise InputError(f"mouth.delay must be in [0, window), got {self.delay}")
        if not isinstance(self.depth, bool):
            raise InputError(f"mouth.depth must be true or false, got {self.depth!r}")
        if self.out_dim % 3 and not self.depth:
            raise InputError(f"mouth.depth=false needs 3D points: out_dim {self.out_dim}")
        if self.normalise not in ("none", "global", "coordinate"):
            raise InputError(
                f"mouth.normalise must be none, global or coordinate, got {self.normalise!r}"
            )


class AudioToMouth(nn.Module):
    """``forward(audio (B, T, audio_dim)) -> dv (B, T, out_dim)``; see :attr:`MouthConfig.delay`."""

    def __init__(self, config: MouthConfig) -> None:
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(
            config.audio_dim,
            config.hidden,
            config.n_layers,
            batch_first=True,
            dropout=config.dropout if config.n_layers > 1 else 0.0,
        )
        layers: list[nn.Module] = []
        width = config.hidden
        for w in config.mlp:
            layers += [nn.Linear(width, w), nn.ReLU()]
            width = w
        layers.append(nn.Linear(width, config.out_dim))
        self.mlp = nn.Sequential(*layers)
        self.scale: torch.Tensor | None
        if config.normalise != "none":  # set by training (train_mouth), kept in the checkpoint
            self.register_buffer("scale", torch.ones(config.out_dim))
        else:
            self.scale = None
        # 1 for the coordinates the model predicts, 0 for the depth without config.depth
        self.axes: torch.Tensor
        axes = torch.ones(config.out_dim)
        if not config.depth:
            axes[2::3] = 0.0
        self.register_buffer("axes", axes, persistent=False)

    def forward(
        self, audio: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        assert audio.ndim == 3 and audio.shape[-1] == self.config.audio_dim, f"{tuple(audio.shape)}"
        h, state = self.lstm(audio, state)  # (B, T, hidden)
        out = self.mlp(h)  # (B, T, out_dim)
        if not self.config.depth:
            out = out * self.axes
        return (out if self.scale is None else out * self.scale), state

    def losses(
        self, audio: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """L2 between output t and the target at t - delay (targets (B, T, out_dim)), over
        the frames ``mask`` (B, T) keeps (all without one); in units of
        :attr:`MouthConfig.normalise`; the coordinates the model predicts only
        (:attr:`MouthConfig.depth`)."""
        d = self.config.delay
        pred, _ = self(audio)
        pred = pred[:, d:] if d else pred
        tgt = target[:, : target.shape[1] - d] if d else target
        diff = pred - tgt if self.scale is None else (pred - tgt) / self.scale
        err = (diff**2 * self.axes).sum(-1) / self.axes.sum()  # (B, T - d)
        if mask is None:
            return {"l2": err.mean()}
        keep = (mask[:, : mask.shape[1] - d] if d else mask).to(err.dtype)
        return {"l2": (err * keep).sum() / keep.sum().clamp(min=1.0)}
