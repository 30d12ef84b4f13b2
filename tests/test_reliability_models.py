"""Model-side reliability: run files load safely (no file of a run can run code) and the
bad inputs of train, animate and eval each get one clear line, exit code 1, no traceback
and nothing half-written (issue 15)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lsp_models.train.checkpoint import (
    from_plain,
    load_checkpoint,
    safe_load,
    save_plain,
    to_plain,
)
from lsp_prep.errors import CheckpointError

STAGES = ("apc", "mouth", "headpose", "renderer")


class Payload:
    """Unpickling this runs code: it writes ``marker`` (what a hostile run file could do)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def hostile_copy(src: Path, dst: Path, marker: Path) -> Path:
    """``dst``: the run file ``src`` (or a minimal checkpoint when ``src`` is None) with a
    code-executing object slipped into it, saved as plain ``torch.save`` does."""
    data = torch.load(src, map_location="cpu", weights_only=True)
    slot = data.setdefault("extra", {}) if "checkpoint_version" in data else data
    slot["note"] = Payload(marker)
    torch.save(data, dst)
    return dst


def fake_checkpoint(stage: str) -> dict:
    return {"checkpoint_version": 1, "stage": stage, "step": 3, "extra": {}, "model": {}}


def assert_refused(result, marker: Path, path: Path) -> None:
    """Exit code 1, one error line naming ``path`` and the way out, no traceback, and the
    payload never ran."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert str(path) in result.output.replace("\n", "")
    assert "refused unread" in result.output and "--trust" in result.output
    assert not marker.exists()


# ----------------------------------------------------------------------------- safe files


def test_payload_runs_when_unpickled_fully(tmp_path):
    """The hostile file is real: loading it the old way (weights_only=False) runs its code."""
    src = save_plain(tmp_path / "apc.pt", fake_checkpoint("apc"))
    marker = tmp_path / "marker"
    bad = hostile_copy(src, tmp_path / "bad.pt", marker)
    torch.load(bad, map_location="cpu", weights_only=False)
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("stage", STAGES)
def test_hostile_checkpoint_refused_and_payload_never_runs(tmp_path, stage):
    src = save_plain(tmp_path / "src.pt", fake_checkpoint(stage))
    marker = tmp_path / "marker"
    (tmp_path / stage).mkdir()
    bad = hostile_copy(src, tmp_path / stage / f"{stage}.pt", marker)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(bad, stage=stage)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: holds pickled Python objects")
    assert f"retrain with `lsp train {stage}`" in msg
    assert f"`lsp convert-run {tmp_path} --trust`" in msg
    assert "\n" not in msg and not marker.exists()


def test_every_torch_load_in_the_toolkit_is_weights_only():
    """A new loader cannot slip in full unpickling: the one exception is the converter the
    user runs knowingly (`lsp convert-run --trust`)."""
    import re

    root = Path(__file__).resolve().parent.parent
    calls = []
    for pkg in ("lsp_models", "lsp_prep", "lsp_report", "lsp_synth", "cli"):
        for src in sorted((root / pkg).rglob("*.py")):
            for m in re.finditer(r"torch\.load\(([^)]*)\)", src.read_text()):
                calls.append((src.relative_to(root).as_posix(), m.group(1)))
    unsafe = [(f, args) for f, args in calls if "weights_only=True" not in args]
    assert len(calls) >= 4
    assert unsafe == [
        ("lsp_models/train/checkpoint.py", 'path, map_location="cpu", weights_only=False')
    ]


def test_plain_round_trip_keeps_arrays_and_refuses_objects(tmp_path):
    extra = {
        "mean": np.arange(6, dtype=np.float32).reshape(2, 3),
        "std": np.linspace(0, 1, 4),
        "frames": np.array([3, 5, 8]),
        "n": np.int64(7),
        "where": Path("/a/b"),
        "pair": (1, [2.5, None]),
    }
    path = save_plain(tmp_path / "x.pt", {"extra": extra, "w": torch.ones(2)})
    back = safe_load(path, fix="retrain")
    for key in ("mean", "std", "frames"):
        assert isinstance(back["extra"][key], np.ndarray)
        assert back["extra"][key].dtype == extra[key].dtype
        np.testing.assert_array_equal(back["extra"][key], extra[key])
    assert back["extra"]["n"] == 7 and type(back["extra"]["n"]) is int
    assert back["extra"]["where"] == "/a/b" and back["extra"]["pair"] == (1, [2.5, None])
    assert from_plain(to_plain({"a": [np.zeros(1)]}))["a"][0].dtype == np.float64
    with pytest.raises(TypeError, match=r"x.pt\['extra'\]\['bad'\]: a Payload"):
        save_plain(tmp_path / "x.pt", {"extra": {"bad": Payload(tmp_path / "m")}})
    assert safe_load(path, fix="retrain")["w"].tolist() == [1.0, 1.0]  # not overwritten
    assert [p.name for p in tmp_path.iterdir()] == ["x.pt"]  # no temporary left


def test_old_checkpoint_refused_then_converted_knowingly(tmp_path, lsp):
    """A checkpoint of the previous toolkit (numpy arrays pickled as objects) is refused with
    the way out; `lsp convert-run` needs --trust, then the run loads safely."""
    run = tmp_path / "run"
    (run / "apc").mkdir(parents=True)
    old = {**fake_checkpoint("apc"), "extra": {"mel_mean": np.full(80, 0.5, np.float32)}}
    torch.save(old, run / "apc" / "apc.pt")
    torch.save({"features": torch.zeros(4, 8), "frames": np.arange(4)}, run / "features.pt")
    with pytest.raises(CheckpointError, match="convert-run"):
        load_checkpoint(run / "apc" / "apc.pt", stage="apc")
    before = (run / "apc" / "apc.pt").read_bytes()
    refused = lsp("convert-run", run)
    assert refused.exit_code == 1 and "add --trust" in refused.output
    assert (run / "apc" / "apc.pt").read_bytes() == before
    done = lsp("convert-run", run, "--trust")
    assert done.exit_code == 0, done.output
    assert "2 file(s) converted" in done.output
    ckpt = load_checkpoint(run / "apc" / "apc.pt", stage="apc")
    assert ckpt["extra"]["mel_mean"].dtype == np.float32 and ckpt["step"] == 3
    np.testing.assert_array_equal(safe_load(run / "features.pt", fix="")["frames"], np.arange(4))
    again = lsp("convert-run", run, "--trust")
    assert again.exit_code == 0 and "0 file(s) converted" in again.output
    (run / "features.pt").write_bytes(b"PK\x03\x04 cut")
    damaged = lsp("convert-run", run, "--trust")
    assert damaged.exit_code == 1 and "Traceback" not in damaged.output
    assert flat(damaged.output).startswith(f"error: {run / 'features.pt'}: not a readable")


def test_damaged_checkpoint_one_line(tmp_path):
    path = save_plain(tmp_path / "apc.pt", fake_checkpoint("apc"))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"apc.pt: not a readable checkpoint \(") as err:
        load_checkpoint(path, stage="apc")
    assert "\n" not in str(err.value)


# ------------------------------------------------------- every loader, on a trained run


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


LOADS = [("train", f"{s}/{s}.pt") for s in STAGES] + [
    (cmd, f)
    for cmd in ("animate", "eval")
    for f in [f"{s}/{s}.pt" for s in STAGES] + ["features.pt"]
]


@pytest.mark.parametrize(("command", "name"), LOADS)
def test_hostile_run_file_refused_by_every_loader(
    run_copy, single_face_dataset, speech_wav, tmp_path, lsp, command, name
):
    marker = tmp_path / "marker"
    target = run_copy / name
    hostile_copy(target, target, marker)
    if command == "train":
        stage = name.split("/")[0]
        args = ["train", stage, "-r", run_copy, "--dataset", single_face_dataset]
        result = lsp(*args, "--device", "cpu", "--set", f"{stage}_train.max_steps=1")
    elif command == "animate":
        out = tmp_path / "out" / "x.mp4"
        result = lsp(
            "animate", "-r", run_copy, "--audio", speech_wav, "--output", out, "--device", "cpu"
        )
        assert not out.parent.exists() or not any(out.parent.iterdir())
    else:
        result = lsp("eval", "-r", run_copy, "--device", "cpu", "--max-frames", 1, "--seeds", 1)
        assert not (run_copy / "eval.json").exists()
    assert_refused(result, marker, target)


# ------------------------------------------------------------- bad inputs, up front


def flat(output: str) -> str:
    """The CLI's output on one line (rich wraps long lines at spaces)."""
    return " ".join(output.split())


@pytest.fixture
def fake_run(tmp_path, synthetic_dataset) -> Path:
    """A run directory whose checkpoints exist but hold no weights (enough for every check
    made before a model loads), recording the synthetic dataset and its source hash."""
    import json

    run = tmp_path / "run"
    for stage in ("apc", "mouth", "headpose"):
        save_plain(run / stage / f"{stage}.pt", fake_checkpoint(stage))
    info = {"dataset": str(synthetic_dataset), "source_sha256": "0" * 64}
    (run / "run.json").write_text(json.dumps(info))
    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def bad_dataset(kind: str, tmp_path: Path, media: dict, synthetic_dataset: Path) -> Path:
    """A file given as --dataset that is not a usable dataset."""
    if kind == "video":
        return Path(shutil.copy(media["single_face"], tmp_path / "clip.mp4"))
    if kind == "audio":
        return Path(shutil.copy(media["speech"], tmp_path / "speech.wav"))
    if kind == "missing":
        return tmp_path / "none.h5"
    path = tmp_path / "bad.h5"
    data = synthetic_dataset.read_bytes()
    path.write_bytes(data[: len(data) // 2] if kind == "truncated" else b"not a dataset\n")
    return path


DATASET_MESSAGES = {
    "video": "is a video, not a dataset: prep it first (`lsp prep",
    "audio": "is an audio file, not a dataset: --dataset takes the .h5",
    "truncated": "not a readable HDF5 dataset, damaged or truncated",
    "text": "not a readable HDF5 dataset",
    "missing": "no such dataset file (--dataset takes the .h5 of `lsp prep`)",
}


@pytest.mark.parametrize("command", ["train", "animate", "eval"])
@pytest.mark.parametrize("kind", list(DATASET_MESSAGES))
def test_bad_dataset_one_line_nothing_written(
    lsp, fake_run, tmp_path, media, synthetic_dataset, speech_wav, command, kind
):
    ds = bad_dataset(kind, tmp_path, media, synthetic_dataset)
    before = snapshot(fake_run)
    out = tmp_path / "out" / "x.mp4"
    new_run = tmp_path / "new_run"
    if command == "train":
        result = lsp("train", "all", "-r", new_run, "--dataset", ds, "--device", "cpu")
    elif command == "animate":
        result = lsp(
            "animate", "-r", fake_run, "--dataset", ds, "--audio", speech_wav, "--output", out
        )
    else:
        result = lsp("eval", "-r", fake_run, "--dataset", ds, "--device", "cpu")
    assert result.exit_code == 1, result.output
    text = flat(result.output)
    assert text.startswith(f"error: {ds}: ") and DATASET_MESSAGES[kind] in text, text
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) <= 3
    assert snapshot(fake_run) == before  # no animate.json, no eval.json
    assert not new_run.exists() and not out.parent.exists()


def test_resume_with_other_preset_refused_before_any_work(lsp, tmp_path, synthetic_dataset):
    """A cpu-small run resumed with --preset paper: one line naming what differs, nothing
    trained or written (not a load_state_dict size-mismatch traceback)."""
    import dataclasses

    from lsp_models.config import load_preset

    small = load_preset("cpu-small")
    run = tmp_path / "run"
    # the mouth's audio_dim is derived from the APC at training time, not the preset's
    mouth = dataclasses.replace(small.mouth, audio_dim=2 * small.apc.hidden)
    for stage, model in (("apc", small.apc), ("mouth", mouth)):
        ckpt = {**fake_checkpoint(stage), "model_config": dataclasses.asdict(model)}
        save_plain(run / stage / f"{stage}.pt", ckpt)
    before = snapshot(run)
    args = ["-r", run, "--dataset", synthetic_dataset, "--device", "cpu"]
    for stage in ("all", "mouth"):
        result = lsp("train", stage, *args, "--preset", "paper")
        assert result.exit_code == 1, result.output
        text = flat(result.output)
        first = "apc" if stage == "all" else "mouth"
        assert text.startswith(f"error: {run / first / f'{first}.pt'}: trained with other {first}")
        assert f"hidden: {small.apc.hidden if first == 'apc' else small.mouth.hidden} -> " in text
        assert "--no-resume or another --run-dir" in text and "Traceback" not in text
        assert snapshot(run) == before
    changed = lsp("train", "mouth", *args, "--set", "mouth.delay=3")
    assert "trained with other mouth settings than asked (delay: 18 -> 3)" in flat(changed.output)
    # the same settings pass the check (and then fail on the weightless checkpoint, later)
    same = lsp("train", "mouth", *args, "--preset", "cpu-small", "--set", "mouth_train.max_steps=1")
    assert same.exit_code == 1 and "trained with other" not in flat(same.output)
    assert snapshot(run) == before


def test_resume_state_weights_that_do_not_fit(tmp_path):
    from lsp_models.nets.apc import APC, APCConfig
    from lsp_models.train.checkpoint import resume_state
    from lsp_models.train.loop import TrainConfig, make_state

    ckpt = {**fake_checkpoint("apc"), "model": APC(APCConfig(hidden=16)).state_dict()}
    path = save_plain(tmp_path / "apc" / "apc.pt", ckpt)
    state = make_state(APC(APCConfig(hidden=32)), TrainConfig())
    with pytest.raises(CheckpointError, match="its weights do not fit the apc model") as err:
        resume_state(state, path, stage="apc", resume=True)
    assert "\n" not in str(err.value)


def test_animate_into_missing_run_creates_nothing(lsp, tmp_path, speech_wav):
    typo = tmp_path / "typo_dir"
    result = lsp("animate", "-r", typo, "--audio", speech_wav, "--output", tmp_path / "x.mp4")
    assert result.exit_code == 1
    assert (
        flat(result.output)
        == f"error: {typo}: run directory does not exist (train with `lsp train`)"
    )
    assert not typo.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["x.avi", "x.webm", "x.gif", "x"])
def test_animate_output_container_refused(lsp, fake_run, tmp_path, speech_wav, name):
    out = tmp_path / "out" / name
    before = snapshot(fake_run)
    result = lsp("animate", "-r", fake_run, "--audio", speech_wav, "--output", out)
    assert result.exit_code == 1
    text = flat(result.output)
    assert (
        text.startswith(f"error: {out}: cannot write ")
        and "name the output .mp4, .mov, .mkv" in text
    )
    assert snapshot(fake_run) == before and not out.parent.exists()


def test_side_files_follow_full_output_name():
    from lsp_models.infer.animate import side_file
    from lsp_models.infer.video import container

    assert side_file(Path("a/x.mov"), ".json") == Path("a/x.mov.json")
    assert side_file(Path("x.mp4"), ".json") != side_file(Path("x.mov"), ".json")
    assert [container(Path(f"x{s}")) for s in (".mp4", ".MOV", ".mkv")] == [
        "mp4",
        "mov",
        "matroska",
    ]


@pytest.mark.parametrize(
    ("recorded", "verdict"),
    [("0" * 64, "ok"), ("f" * 64, "refused"), (None, "warning")],
)
def test_animate_dataset_checked_against_run_person(
    lsp, fake_run, synthetic_dataset, speech_wav, tmp_path, recorded, verdict
):
    """The synthetic dataset's source hash is 0...0: a run recording another one refuses
    it; a run that records none warns (and goes on, here to fail on the fake weights)."""
    import json

    info = {"dataset": str(synthetic_dataset)}
    if recorded is not None:
        info["source_sha256"] = recorded
    (fake_run / "run.json").write_text(json.dumps(info))
    out = tmp_path / "out.mp4"
    args = ["-r", fake_run, "--dataset", synthetic_dataset, "--audio", speech_wav, "--output", out]
    result = lsp("animate", *args, "--device", "cpu")
    text = flat(result.output)
    assert result.exit_code == 1 and "Traceback" not in text and not out.exists()
    person = "prepped from another video (source 000000000000) than the person of"
    assert (person in text) == (verdict == "refused"), text
    assert ("cannot check that it is the person" in text) == (verdict == "warning"), text
    if verdict == "refused":
        assert not (fake_run / "animate.json").exists()
    else:  # past the person check: fails on the weightless checkpoint
        assert "trained on dataset schema None" in text, text
    evaluated = lsp("eval", "-r", fake_run, "--dataset", synthetic_dataset, "--device", "cpu")
    assert (person in flat(evaluated.output)) == (verdict == "refused")


# ------------------------------------------------------------ on a trained run (slow)


@pytest.fixture
def short_wav(speech_wav, tmp_path) -> Path:
    """The first 0.4 s of the speech sample (a few frames to animate)."""
    from tests.conftest import ffmpeg

    out = tmp_path / "short.wav"
    ffmpeg("-i", str(speech_wav), "-t", "0.4", str(out))
    return out


def test_animate_container_follows_extension(lsp, trained_run, short_wav, tmp_path):
    """x.mp4, x.mov and x.mkv beside each other: each in its own container, each with its
    own side file; the run records the person's source hash, so its own dataset passes."""
    import json

    import av

    from lsp_prep.media import probe

    formats = {}
    for ext in ("mp4", "mov", "mkv"):
        out = tmp_path / f"x.{ext}"
        result = lsp(
            "animate", "-r", trained_run, "--audio", short_wav, "--output", out, "--fps", 30
        )
        assert result.exit_code == 0, result.output
        assert "warning" not in result.output
        with av.open(str(out)) as c:
            formats[ext] = c.format.name
        assert probe(out).has_audio
        assert json.loads((tmp_path / f"x.{ext}.json").read_text())["frames"] == 12
    assert formats["mkv"] == "matroska,webm" and formats["mov"] == formats["mp4"]  # mov,mp4,...
    with av.open(str(tmp_path / "x.mov")) as c:
        assert c.metadata.get("major_brand") == "qt  "
    with av.open(str(tmp_path / "x.mp4")) as c:
        assert c.metadata.get("major_brand") == "isom"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("x.")) == [
        "x.mkv",
        "x.mkv.json",
        "x.mov",
        "x.mov.json",
        "x.mp4",
        "x.mp4.json",
    ]
    assert json.loads((trained_run / "run.json").read_text())["source_sha256"]


def test_animate_other_person_refused(lsp, trained_run, synthetic_dataset, short_wav, tmp_path):
    out = tmp_path / "x.mp4"
    args = [
        "-r",
        trained_run,
        "--dataset",
        synthetic_dataset,
        "--audio",
        short_wav,
        "--output",
        out,
    ]
    result = lsp("animate", *args)
    assert result.exit_code == 1
    assert flat(result.output).startswith(f"error: {synthetic_dataset}: prepped from another video")
    assert list(tmp_path.iterdir()) == [short_wav]
