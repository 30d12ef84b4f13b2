"""The multi-speaker APC corpus of benchmarks/lipsync.py (``--apc multi``): the speakers it
takes from the sample registry, and the balance of the corpus it builds."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks.lipsync import MULTI_PACKAGES, multi_corpus, wav_seconds
from lsp_synth.audio import write_wav
from lsp_synth.samples import PACKAGES

SR = 8000
"""The prompts' sample rate."""


def speaker_files(folder: Path, seconds: list[float]) -> list[Path]:
    """One WAV of noise per duration in ``folder``."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(len(seconds))
    return [
        write_wav(folder / f"p{i}.wav", 0.1 * rng.standard_normal(round(s * SR)), sr=SR)
        for i, s in enumerate(seconds)
    ]


def test_every_speaker_gets_at_most_the_same_minutes(tmp_path) -> None:
    speakers = {
        "long": speaker_files(tmp_path / "a", [2.5] * 24),  # 60 s
        "varied": speaker_files(tmp_path / "b", [0.5, 1.5, 3.0, 4.0, 2.5] * 4),  # 46 s
        "short": speaker_files(tmp_path / "c", [1.0, 2.0]),  # 3 s: all of it
    }
    folder = tmp_path / "corpus"
    taken = multi_corpus(folder, speakers, minutes=0.25)  # 15 s each at most
    assert not folder.with_name("corpus.partial").exists()
    on_disk: dict[str, float] = {}
    for link in folder.iterdir():
        assert link.is_symlink() and link.resolve().parent.parent == tmp_path
        name = re.fullmatch(r"(\w+?)_\d{4}_p\d+\.wav", link.name)
        assert name is not None, link.name
        on_disk[name[1]] = on_disk.get(name[1], 0.0) + wav_seconds(link)
    assert taken == pytest.approx({k: v / 60 for k, v in on_disk.items()})
    assert on_disk["long"] == pytest.approx(15.0)
    assert 15.0 - 4.0 < on_disk["varied"] <= 15.0  # short of the cap by less than a file
    assert on_disk["short"] == pytest.approx(3.0)


def test_the_corpus_is_made_anew_and_the_order_follows_the_seed(tmp_path) -> None:
    speakers = {"s": speaker_files(tmp_path / "s", [1.0] * 20)}
    folder = tmp_path / "corpus"
    multi_corpus(folder, speakers, minutes=5 / 60, seed=0)
    first = sorted(p.name for p in folder.iterdir())
    multi_corpus(folder, speakers, minutes=5 / 60, seed=0)
    assert sorted(p.name for p in folder.iterdir()) == first and len(first) == 5
    multi_corpus(folder, speakers, minutes=5 / 60, seed=1)
    other = sorted(p.name for p in folder.iterdir())
    assert len(other) == 5 and other != first  # the old links are gone


def test_the_multi_speaker_packages_are_pinned_and_each_another_voice() -> None:
    names = ("asterisk_prompts", *MULTI_PACKAGES)
    packages = [PACKAGES[n] for n in names]
    for p in packages:
        assert re.fullmatch(r"[0-9a-f]{64}", p.sha256), p.name
        assert re.fullmatch(r"[\w.+:~-]+", p.version) and p.version[0].isdigit(), p.name
        assert p.folder.startswith("usr/share/asterisk/sounds/"), p.name
        assert p.package.endswith("-wav"), p.name  # `lsp train apc --corpus` reads WAV
    # the voice is the last part of the folder (LANG_COUNTRY_SEX_NAME): all different, and
    # Allison Smith (the English prompts, also es_MX_f_Allison) only once
    voices = [p.folder.rsplit("/", 1)[1].rsplit("_", 1)[1] for p in packages]
    assert len(set(voices)) == len(voices), voices
    assert len({p.package for p in packages}) == len(packages)


@pytest.mark.slow  # trains APC (a few seconds)
@pytest.mark.usefixtures("one_thread")
def test_apc_prediction_is_below_copying_where_the_future_differs(tmp_path) -> None:
    """APC trained briefly on noise bursts and a tone alternating every 3 mel frames (25 ms),
    where copying the frame 3 back is always wrong, predicts them better than copying."""
    from benchmarks.lipsync import apc_prediction
    from lsp_models.nets.apc import APCConfig
    from lsp_models.train.apc import train_apc
    from lsp_models.train.loop import TrainConfig
    from lsp_prep.constants import SAMPLE_RATE

    rng = np.random.default_rng(0)
    seg = SAMPLE_RATE // 40  # 25 ms
    t = np.arange(seg) / SAMPLE_RATE
    tone = 0.3 * np.sin(2 * np.pi * 300 * t)
    y = np.concatenate(
        [0.2 * rng.standard_normal(seg) if i % 2 else tone for i in range(60)]
    ).astype(np.float32)  # 1.5 s
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_wav(corpus / "bursts.wav", y, sr=SAMPLE_RATE)
    run = tmp_path / "run"
    train_apc(
        run_dir=run,
        corpus=corpus,
        model=APCConfig(hidden=32),
        config=TrainConfig(max_steps=20, batch_size=2, lr=1e-2, lr_end=1e-3, log_every=10),
    )
    ratio = apc_prediction(run, {"bursts": y})
    assert set(ratio) == {"bursts"}
    assert 0.0 < ratio["bursts"] < 0.5, ratio
