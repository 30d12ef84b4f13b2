"""Autoregressive Predictive Coding (APC): self-supervised speech features.

A stack of unidirectional GRUs reads log-mel frames and a linear head predicts the frame
``shift`` steps ahead (L1). After training the head is dropped; the last GRU layer's hidden
state is the feature. Layers after the first add their input back (residual), as in the
APC paper (Chung et al. 2019) that LSP builds on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lsp_prep.errors import InputError


@dataclass(frozen=True)
class APCConfig:
    """APC model size and objective."""

    n_mels: int = 80
    """Input log-mel bands (the dataset's)."""
    hidden: int = 512
    """GRU width; also the feature size."""
    n_layers: int = 3
    """Stacked GRU layers."""
    shift: int = 3
    """Predict the mel frame this many steps ahead (n in the paper)."""
    dropout: float = 0.0
    """Dropout between GRU layers while training."""
    min_band_std: float = 0.0
    """Bands whose standard deviation over the training speech is below this fraction of
    the median band's are left out of APC's input (read as 0; the others are normalised by
    the training speech's mean and std): bands the training speech never filled. An 8 kHz
    corpus (the asterisk prompts) leaves every band above 4 kHz at the log floor, std ~0,
    and a 16 kHz recording's energy there, divided by that std, reached APC as values of
    ~1e5. 0 (how checkpoints written before this option existed read it): every band."""

    def __post_init__(self) -> None:
        if min(self.n_mels, self.hidden, self.n_layers, self.shift) < 1:
            raise InputError("apc: n_mels, hidden, n_layers and shift must all be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"apc.dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.min_band_std < 1.0:
            raise InputError(f"apc.min_band_std must be in [0, 1), got {self.min_band_std}")


class APC(nn.Module):
    """GRU stack + prediction head. ``forward`` returns (prediction, features)."""

    def __init__(self, config: APCConfig) -> None:
        super().__init__()
        self.config = config
        sizes = [config.n_mels] + [config.hidden] * config.n_layers
        # time-major GRUs: this torch build's CPU kernel is ~100x slower with batch_first
        self.grus = nn.ModuleList(nn.GRU(sizes[i], sizes[i + 1]) for i in range(config.n_layers))
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden, config.n_mels)

    def encode(
        self, mel: torch.Tensor, state: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Features of ``mel`` (B, T, n_mels) -> (B, T, hidden), and the GRU states
        (one (1, B, hidden) per layer) to continue from: chunked calls equal one call."""
        assert mel.ndim == 3 and mel.shape[-1] == self.config.n_mels, f"mel {tuple(mel.shape)}"
        x, new_state = mel.transpose(0, 1), []  # (T, B, n_mels)
        for i, gru in enumerate(self.grus):
            y, h = gru(x, None if state is None else state[i])  # (T, B, H)
            new_state.append(h)
            y = self.dropout(y) if i < len(self.grus) - 1 else y
            x = y + x if i > 0 else y  # residual from the second layer on
        return x.transpose(0, 1), new_state  # (B, T, H)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, _ = self.encode(mel)  # (B, T, H)
        return self.head(feats), feats  # (B, T, n_mels), (B, T, H)

    def losses(
        self, mel: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """L1 between the prediction at t and the frame at t + shift, over valid frames."""
        n = self.config.shift
        pred, _ = self(mel)
        err = (pred[:, :-n] - mel[:, n:]).abs().mean(-1)  # (B, T - n)
        if lengths is None:
            l1 = err.mean()
        else:
            t = torch.arange(err.shape[1], device=mel.device)
            mask = (t[None] < (lengths[:, None] - n)).to(err.dtype)
            l1 = (err * mask).sum() / mask.sum().clamp(min=1)
        return {"l1": l1}
