"""TensorBoard for ``lsp train --tensorboard``: the run's own logs, mirrored as they grow.

Training writes ``RUN/<stage>/metrics.jsonl`` (every named loss of every logged step),
``RUN/<stage>/val.jsonl`` (validation metrics at checkpoints) and the renderer's sample
sheets; :class:`TensorBoardMirror` copies what is new in them into event files under
``RUN/tensorboard/<stage>/`` (scalars under their loss names, ``val/...``, ``lr``, and the
sheets as images), whenever the progress callback it wraps is called and at most every
``every_s`` seconds. So TensorBoard shows exactly what ``lsp report`` and the files show,
resumed runs included, and the training loop knows nothing of it. Rank 0 only.

    tensorboard --logdir RUN/tensorboard
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsp_prep.errors import InputError
from lsp_prep.progress import ProgressFn

TB_DIR = "tensorboard"
"""RUN/tensorboard/<stage>/: the event files."""

NOT_SCALARS = frozenset({"step", "seconds"})


class TensorBoardMirror:
    """Copies new lines of a run's logs and new sample sheets into TensorBoard event files.

    Call it as a progress callback (``mirror(stage, done, total)``), or :meth:`sync`;
    :meth:`close` syncs a last time and closes the writers.
    """

    def __init__(self, run_dir: Path, *, every_s: float = 5.0) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise InputError(
                "--tensorboard needs the tensorboard package: pip install tensorboard "
                "(or the toolkit's extra: pip install -e '.[tensorboard]')"
            ) from None
        self._writer_cls = SummaryWriter
        self.run_dir = Path(run_dir)
        self.every_s = every_s
        self._writers: dict[str, Any] = {}
        self._offsets: dict[Path, int] = {}
        self._sheets: set[Path] = set()
        self._last = 0.0

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self._last >= self.every_s or (total is not None and done >= total):
            self.sync()

    def writer(self, stage: str) -> Any:
        if stage not in self._writers:
            self._writers[stage] = self._writer_cls(str(self.run_dir / TB_DIR / stage))
        return self._writers[stage]

    def sync(self) -> None:
        """Write everything new in the run's logs and sample folders."""
        self._last = time.monotonic()
        for log in sorted(self.run_dir.glob("*/metrics.jsonl")):
            for rec in self._new_records(log):
                self._scalars(log.parent.name, rec, prefix="")
        for log in sorted(self.run_dir.glob("*/val.jsonl")):
            for rec in self._new_records(log):
                self._scalars(log.parent.name, rec, prefix="val/")
        for sheet in sorted(self.run_dir.glob("*/samples/step_*.jpg")):
            if sheet not in self._sheets:
                self._sheets.add(sheet)
                self._image(sheet)
        for w in self._writers.values():
            w.flush()

    def close(self) -> None:
        self.sync()
        for w in self._writers.values():
            w.close()
        self._writers.clear()

    def _new_records(self, path: Path) -> list[dict[str, Any]]:
        """Complete lines written to ``path`` since the last call."""
        start = self._offsets.get(path, 0)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line being written stays for the next call
        self._offsets[path] = start + end
        out = []
        for line in data[:end].decode().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def _scalars(self, stage: str, record: dict[str, Any], *, prefix: str) -> None:
        step = int(record.get("step", 0))
        w = self.writer(stage)
        for k, v in record.items():
            if k not in NOT_SCALARS and isinstance(v, (int, float)):
                w.add_scalar(prefix + k, float(v), step)

    def _image(self, sheet: Path) -> None:
        import cv2

        bgr = cv2.imread(str(sheet))
        if bgr is None:  # being written: next sync
            self._sheets.discard(sheet)
            return
        step = int(sheet.stem.split("_")[-1])
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        self.writer(sheet.parent.parent.name).add_image("samples", rgb, step, dataformats="HWC")


def with_mirror(progress: ProgressFn, mirror: TensorBoardMirror | None) -> ProgressFn:
    """``progress`` that also drives ``mirror`` (unchanged when there is none)."""
    if mirror is None:
        return progress

    def both(stage: str, done: int, total: int | None) -> None:
        progress(stage, done, total)
        mirror(stage, done, total)

    return both
