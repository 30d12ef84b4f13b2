"""Training data: speech corpora for APC, and windows of a person's dataset."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsp_prep.constants import FPS, MELS_PER_FRAME, SAMPLE_RATE
from lsp_prep.dataset.reader import DatasetReader
from lsp_prep.errors import InputError, ToolError
from lsp_prep.stages.audio import MelConfig, log_mel

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus")


def corpus_mels(
    corpus: Path,
    *,
    chunk_frames: int = 600,
    top_db: float = 40.0,
    mel: MelConfig = MelConfig(),
    max_files: int | None = None,
) -> list[np.ndarray]:
    """Log-mel chunks (T, n_mels) of every audio file under ``corpus``.

    Files are decoded to 16 kHz mono by ffmpeg, leading and trailing silence below
    ``top_db`` is trimmed, the log-mel is computed exactly as prep computes it (120 frames
    per second) and cut into chunks of ``chunk_frames``. Raises InputError for a missing
    or empty folder, or one where no file is readable audio.
    """
    import librosa

    from lsp_prep.media import load_audio

    corpus = Path(corpus)
    if not corpus.is_dir():
        raise InputError(f"{corpus}: corpus folder does not exist")
    files = sorted(p for p in corpus.rglob("*") if p.is_file())
    audio = [p for p in files if p.suffix.lower() in AUDIO_SUFFIXES]
    if not audio:
        raise InputError(
            f"{corpus}: no audio files ({', '.join(AUDIO_SUFFIXES)}) in the corpus folder "
            f"({len(files)} other files)"
        )
    chunks: list[np.ndarray] = []
    unreadable = []
    for path in audio[:max_files]:
        try:
            y = load_audio(path, sr=SAMPLE_RATE)
        except ToolError:
            unreadable.append(path.name)
            continue
        if len(y) == 0:
            unreadable.append(path.name)
            continue
        y, _ = librosa.effects.trim(y, top_db=top_db)
        n = int(len(y) / SAMPLE_RATE * FPS * MELS_PER_FRAME)
        if n < 8:
            continue
        m = log_mel(
            y,
            sr=SAMPLE_RATE,
            n_frames=n,
            hop_length=SAMPLE_RATE / (FPS * MELS_PER_FRAME),
            n_fft=mel.n_fft,
            win_length=int(round(mel.win_s * SAMPLE_RATE)),
            n_mels=mel.n_mels,
            fmin=mel.fmin,
            fmax=mel.fmax,
            log_floor=mel.log_floor,
        ).T
        chunks += [m[s : s + chunk_frames] for s in range(0, len(m) - 7, chunk_frames)]
    if not chunks:
        raise InputError(
            f"{corpus}: none of the {len(audio)} audio files could be read as speech "
            f"({', '.join(unreadable[:3])}{'...' if len(unreadable) > 3 else ''})"
        )
    return chunks


@dataclass
class PersonData:
    """What training reads from one prepped clip (arrays in memory; frames stay on disk)."""

    path: Path
    mel: np.ndarray  # (M, n_mels), M = 2N
    mouth: np.ndarray  # (N, 25, 3) dv_m, NaN where not valid
    rotation: np.ndarray  # (N, 3)
    translation: np.ndarray  # (N, 3)
    valid: np.ndarray  # (N,)
    train: np.ndarray  # frame indices
    val: np.ndarray

    @property
    def n_frames(self) -> int:
        return len(self.valid)


REQUIRED = {
    "audio/mel": "ingest",
    "track/mouth_displacement": "geometry",
    "track/rotation": "geometry",
    "track/translation": "geometry",
    "split/train": "pack",
    "split/val": "pack",
    "landmarks/valid": "track",
}


def load_person(path: Path) -> PersonData:
    """Open a prepped dataset for training; SchemaError names a missing field and the prep
    stage that writes it."""
    with DatasetReader(path) as ds:
        ds.require(REQUIRED)
        return PersonData(
            Path(path),
            ds.read("audio/mel", np.float32),
            ds.read("track/mouth_displacement", np.float32),
            ds.read("track/rotation", np.float32),
            ds.read("track/translation", np.float32),
            ds.read("landmarks/valid"),
            ds.read("split/train"),
            ds.read("split/val"),
        )
