"""``lsp train --tensorboard``: the run's logs mirrored into TensorBoard event files
(lsp_models.train.tensorboard), checked by reading the events back with TensorBoard."""

from __future__ import annotations

import json

import pytest
from test_report import write_run

pytest.importorskip("tensorboard")

from lsp_models.train.tensorboard import TB_DIR, TensorBoardMirror, with_mirror


def events(run_dir, stage):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TB_DIR / stage), size_guidance={"images": 0})
    acc.Reload()
    return acc


def test_mirror_writes_every_loss_val_metric_and_sheet_once(tmp_path):
    run = write_run(tmp_path / "run", None)
    mirror = TensorBoardMirror(run)
    mirror.sync()
    renderer = events(run, "renderer")
    tags = renderer.Tags()
    assert {"gan/g", "l1", "vgg", "fm", "gan/d_real", "gan/d_fake", "total", "lr"} <= set(
        tags["scalars"]
    )
    l1 = renderer.Scalars("l1")
    assert [e.step for e in l1] == list(range(1, 101))
    first = json.loads((run / "renderer" / "metrics.jsonl").read_text().splitlines()[0])
    assert l1[0].value == pytest.approx(first["l1"], rel=1e-6)
    assert [e.step for e in renderer.Images("samples")] == [50, 100]
    img = renderer.Images("samples")[0]
    assert (img.width, img.height) == (384, 128)
    val = events(run, "mouth").Scalars("val/val_mm")
    assert [(e.step, round(e.value, 3)) for e in val] == [(50, 2.5), (100, 2.0)]

    # lines appended later are mirrored once; a half-written line waits
    with open(run / "apc" / "metrics.jsonl", "a") as f:
        f.write('\n{"step": 101, "l1": 0.01, "total": 0.01}\n{"step": 102, "l1"')
    progress = with_mirror(lambda *a: None, mirror)
    progress("apc", 101, 101)  # the end of a stage always syncs
    mirror.close()
    steps = [e.step for e in events(run, "apc").Scalars("l1")]
    assert steps == [*range(1, 101), 101]


def test_train_commands_offer_tensorboard(lsp):
    for stage in ("apc", "mouth", "headpose", "renderer", "all"):
        r = lsp("train", stage, "--help")
        assert "--tensorboard" in r.output, stage
