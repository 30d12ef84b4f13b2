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
        result = lsp("animate", "-r", run_copy, "--audio", speech_wav, "-o", out, "--device", "cpu")
        assert not out.parent.exists() or not any(out.parent.iterdir())
    else:
        result = lsp("eval", "-r", run_copy, "--device", "cpu", "--max-frames", 1, "--seeds", 1)
        assert not (run_copy / "eval.json").exists()
    assert_refused(result, marker, target)
