"""``lsp train apc``: the APC speech-feature model, and the features it gives a person."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from lsp_models.nets.apc import APC, APCConfig
from lsp_models.train.augment import SpeechAugment, augment_copy, band_centres
from lsp_models.train.checkpoint import load_checkpoint, save_plain
from lsp_models.train.data import PersonData, corpus_mels, load_person
from lsp_models.train.device import join_process_group, pick_device
from lsp_models.train.loop import TrainConfig, rank_slice
from lsp_models.train.stage import StageResult, run_stage
from lsp_prep import configtree
from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn
from lsp_prep.stages.audio import MelConfig


def _pad_batch(chunks: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    t = max(len(c) for c in chunks)
    out = np.zeros((len(chunks), t, chunks[0].shape[1]), np.float32)
    for i, c in enumerate(chunks):
        out[i, : len(c)] = c
    return torch.from_numpy(out), torch.tensor([len(c) for c in chunks])


def train_apc(
    *,
    run_dir: Path,
    corpus: Path | None = None,
    dataset: Path | None = None,
    model: APCConfig = APCConfig(),
    config: TrainConfig = TrainConfig(),
    device: str = "auto",
    resume: bool = True,
    progress: ProgressFn | None = None,
) -> StageResult:
    """Train APC on a speech corpus folder, or on the person's own training audio."""
    if corpus is not None:
        chunks = corpus_mels(corpus)
    elif dataset is not None:
        person = load_person(dataset)
        mel = person.mel[: 2 * (int(person.train[-1]) + 1)]
        chunks = [mel[s : s + 600] for s in range(0, len(mel) - 7, 600)]
        warnings.warn(
            "APC trained on the person's own audio only: a larger speech corpus "
            "(--corpus DIR) generalises better to new voices",
            stacklevel=2,
        )
    else:
        raise InputError("train apc needs --corpus DIR or --dataset FILE")
    dev = join_process_group(pick_device(device))
    torch.manual_seed(config.seed)  # the same initial weights on every run
    net = APC(model).to(dev)
    # mean/std normalisation of the log-mel, stored with the model
    allm = np.concatenate(chunks)
    mean, std = allm.mean(0), allm.std(0) + 1e-5
    inputs = [apc_input(model, c, mean, std) for c in chunks]

    def batch_fn(step: int):
        rng = np.random.default_rng([config.seed, step])
        pick = rng.integers(0, len(chunks), config.batch_size)[rank_slice(config.batch_size)]
        x, lengths = _pad_batch([inputs[i] for i in pick])
        return x.to(dev), lengths.to(dev)

    def loss_fn(batch):
        losses = net.losses(*batch)
        return {**losses, "total": losses["l1"]}

    return run_stage(
        "apc",
        net,
        run_dir=run_dir,
        model_config=model,
        config=config,
        batch_fn=batch_fn,
        loss_fn=loss_fn,
        extra={"mel_mean": mean, "mel_std": std},
        resume=resume,
        progress=progress,
    )


def load_apc(
    run_dir: Path, device: torch.device | None = None
) -> tuple[APC, np.ndarray, np.ndarray]:
    """The trained APC (eval mode) and its mel normalisation."""
    ckpt = load_checkpoint(Path(run_dir) / "apc" / "apc.pt", stage="apc")
    net = APC(configtree.from_data(APCConfig, ckpt["model_config"]))
    net.load_state_dict(ckpt["model"])
    net.eval().to(device or torch.device("cpu"))
    return net, ckpt["extra"]["mel_mean"], ckpt["extra"]["mel_std"]


def apc_input(config: APCConfig, mel: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """What APC reads of log-mel ``mel`` (T, n_mels): each band normalised by the training
    statistics ``mean``, ``std`` (n_mels,), the bands :func:`empty_bands` finds with
    ``config.min_band_std`` at 0; float32 (T, n_mels)."""
    x = ((mel - mean) / std).astype(np.float32)
    x[:, empty_bands(std, config.min_band_std)] = 0.0
    return x


def empty_bands(std: np.ndarray, fraction: float) -> np.ndarray:
    """Bands (n_mels,) bool whose training ``std`` is below ``fraction`` of the median
    band's: the training speech never filled them (none when ``fraction`` is 0)."""
    std = np.asarray(std)
    return std < fraction * np.median(std)


@torch.no_grad()
def apc_features(net: APC, mel: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Per video frame: the two APC features of its mel frames, concatenated:
    (M = 2N, n_mels) -> (N, 2 * hidden)."""
    dev = next(net.parameters()).device
    x = torch.from_numpy(apc_input(net.config, mel, mean, std))[None].to(dev)
    feats, _ = net.encode(x)  # (1, M, H)
    f = feats[0].cpu().numpy()
    n = len(f) // 2
    return f[: 2 * n].reshape(n, -1)


def augmented_features(
    run_dir: Path, mel: np.ndarray, augment: SpeechAugment, *, seed: int
) -> list[np.ndarray]:
    """The trained APC's features (N, 2H) of ``augment.copies`` augmented copies of the
    person's log-mel ``mel`` (2N, n_mels) (:func:`lsp_models.train.augment.augment_copy`,
    copy ``i`` drawn with seed ``[seed, i]``); [] without copies."""
    if augment.copies == 0:
        return []
    net, mean, std = load_apc(run_dir)
    mc = MelConfig()
    centres = band_centres(mel.shape[1], float(mc.fmin), float(mc.fmax))
    return [
        apc_features(
            net,
            augment_copy(mel, augment, centres=centres, seed=(seed, i)),
            mean,
            std,
        )
        for i in range(augment.copies)
    ]


def person_apc_features(run_dir: Path, dataset: Path) -> tuple[PersonData, np.ndarray]:
    """A person's dataset and the trained APC's features of its audio, (N, 2 * hidden)."""
    person = load_person(dataset)
    apc, mean, std = load_apc(run_dir)
    return person, apc_features(apc, person.mel, mean, std)


def build_feature_database(
    run_dir: Path, person: PersonData, feats: np.ndarray | None = None
) -> Path:
    """Save the person's training-split APC features (the manifold-projection database);
    ``feats`` (N, 2H): the run's APC features of the person's audio when the caller has
    them (:func:`person_apc_features`; computed here otherwise)."""
    if feats is None:
        net, mean, std = load_apc(run_dir)
        feats = apc_features(net, person.mel, mean, std)
    path = Path(run_dir) / "features.pt"
    return save_plain(
        path, {"features": torch.from_numpy(feats[person.train]), "frames": person.train}
    )
