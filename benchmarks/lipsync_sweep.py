"""Lip sync, one variable at a time: mouth models trained beside a finished lipsync.py run.

    PYTHONPATH=. python benchmarks/lipsync_sweep.py --work DIR [--run run_corpus] [--threads 1]
                                                   --variant NAME [key=value ...] [--variant ...]
                                                   [--per-voice]

``DIR`` is a work folder of ``benchmarks/lipsync.py`` (its render, dataset and a run with
APC, the feature database and the head-pose model). Each ``--variant`` trains a mouth model
at cpu-small into ``RUN/mouth_NAME`` with its ``key=value`` settings: keys starting with
``animate.`` change the animate settings it is scored with (e.g. ``animate.lle_blend=0.5``),
the others are preset overrides (e.g. ``mouth_train.max_steps=1000``, ``mouth.delay=6``,
``mouth_train.seed=1``); one with animate settings alone scores ``RUN/mouth``. A variant
whose checkpoint exists is scored again, not retrained (its training seconds were kept).
``--run-set``: a missing run is trained first as lipsync.py trains it (APC on the corpus,
the mouth at delay 18, the head pose), with these overrides (e.g. ``apc.hidden=128``);
``--headpose-from RUN``: its head-pose model copied from that run instead of trained (the
scores replay the recorded head pose, so the head-pose model does not enter them).

Scores as lipsync.py's table: ``lsp eval``'s val error against the mean baseline, and on
held-out and training speech the error against the truth, err/base, lip-opening r at lag 0
and the best lag. The first row, ``targets``, is the dataset's own mouth targets taken as
the prediction of the truth (what a model that reproduced them exactly would score) and
their RMS against the truth's. ``--per-voice``: each held-out voice scored on its own
as well (err/base and r0 per voice, a second table). Rows are kept in ``DIR/sweep.json``
by name.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from benchmarks import lipsync
from benchmarks.lipsync import console


def split_settings(settings: list[str]) -> tuple[list[str], list[str]]:
    """``(preset overrides, animate overrides)`` of ``key=value`` strings."""
    preset = [s for s in settings if not s.startswith("animate.")]
    animate = [s.removeprefix("animate.") for s in settings if s.startswith("animate.")]
    return preset, animate


def main() -> None:
    ap = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--work", type=Path, required=True, help="a lipsync.py work folder")
    ap.add_argument("--run", default="run_corpus", help="the run folder inside it")
    ap.add_argument(
        "--run-set",
        nargs="+",
        default=[],
        metavar="key=value",
        help="when the run is missing: train it (APC on the corpus, mouth, head pose) with these",
    )
    ap.add_argument("--headpose-from", type=Path, help="copy a missing run's head pose from")
    ap.add_argument(
        "--variant", nargs="+", action="append", required=True, metavar="NAME [key=value]"
    )
    ap.add_argument("--per-voice", action="store_true", help="score each held-out voice too")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    setup = lipsync.SpeakerSetup()
    speaker = lipsync.render_speaker(args.work / "render", setup)
    dataset = args.work / "data" / "speaker.h5"
    run = args.work / args.run
    hp = None if args.headpose_from is None else args.headpose_from / "headpose"
    lipsync.train_run(
        run,
        dataset,
        corpus=speaker.corpus,
        delays=[18],
        overrides=args.run_set,
        headpose_from=hp,
    )
    frame = lipsync.fit_frame(speaker, dataset)
    heldout = lipsync.heldout_speech()
    seen = {"training speech": lipsync._load_wav(speaker.voice)[: 30 * lipsync.SAMPLE_RATE]}
    record_file = args.work / "sweep.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    err, base, amplitude = lipsync.targets_error(speaker, dataset, frame)
    record["targets"] = {"settings": [], "seconds": 0.0, "targets": [err, base, amplitude]}
    for name, *settings in args.variant:
        preset, animate = split_settings(settings)
        folder = f"mouth_{name}" if preset else "mouth"  # animate settings alone: RUN/mouth
        console.log(f"{folder}: {' '.join(settings) or 'cpu-small'}")
        seconds = lipsync.train_once(run, dataset, "mouth", folder, preset)
        val = lipsync.val_scores(run, dataset, folder, animate=animate)
        scores = {
            label: lipsync.score_speech(
                run, dataset, frame, setup.rule, speech, mouth=folder, animate=animate
            ).__dict__
            for label, speech in (("held-out", heldout), ("training", seen))
        }
        if args.per_voice:
            scores["voices"] = {
                voice: lipsync.score_speech(
                    run, dataset, frame, setup.rule, {voice: y}, mouth=folder, animate=animate
                ).__dict__
                for voice, y in heldout.items()
            }
        record[name] = {"settings": settings, "seconds": seconds, "val": val, **scores}
        record_file.write_text(json.dumps(record, indent=2))
    console.print(sweep_table(record))
    if any("voices" in row for row in record.values()):
        console.print(voice_table(record))


def sweep_table(record: dict) -> Table:
    t = Table(
        title="mouth variants (cpu-small; val: lsp eval's mm; held-out / training speech: "
        "error against the truth / mean baseline, lip-opening r at lag 0, best r, its lag)",
        title_justify="left",
    )
    for col in ("variant", "settings", "train s", "val err", "val base"):
        t.add_column(col, justify="right" if col not in ("variant", "settings") else "left")
    for col in ("held e/b", "r0", "r*", "lag", "train e/b", "r0 ", "r* ", "lag "):
        t.add_column(col, justify="right")
    for name, row in record.items():
        if name == "targets":
            err, base, amplitude = row["targets"]
            t.add_row(
                name, f"tracked (RMS {amplitude:.2f}x the truth's)", "", "", "", "", "", "", "",
                f"{err / base:.2f}", "", "", "",
            )  # fmt: skip
            continue
        h, s = row["held-out"], row["training"]
        t.add_row(
            name,
            " ".join(row["settings"]),
            f"{row['seconds']:.0f}",
            f"{row['val'][0]:.2f}",
            f"{row['val'][1]:.2f}",
            *(
                v
                for sc in (h, s)
                for v in (
                    f"{sc['error_mm'] / sc['baseline_mm']:.2f}",
                    f"{sc['r0']:.2f}",
                    f"{sc['r_best']:.2f}",
                    str(sc["lag"]),
                )
            ),
        )
    return t


def voice_table(record: dict) -> Table:
    """err/base and r0 per held-out voice, for the variants scored ``--per-voice``."""
    rows = {name: row["voices"] for name, row in record.items() if "voices" in row}
    voices = list(next(iter(rows.values())))
    t = Table(
        title="per held-out voice: error / mean baseline, lip-opening r at lag 0",
        title_justify="left",
    )
    t.add_column("variant")
    for v in voices:
        t.add_column(v, justify="right")
    for name, scores in rows.items():
        t.add_row(
            name,
            *(
                f"{scores[v]['error_mm'] / scores[v]['baseline_mm']:.2f} / {scores[v]['r0']:.2f}"
                for v in voices
            ),
        )
    return t


if __name__ == "__main__":
    main()
