"""The one atomic file writer of the package: write a temporary sibling, then rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lsp_prep.errors import InputError


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` that replaces ``path`` when the block succeeds.

    The temporary file is named ``.{stem}.XXXX.part{suffix}`` with ``path``'s own suffix,
    so encoders that pick a format from the name still see it. When the block raises,
    ``path`` is left as it was and the temporary file is removed: a crash never leaves a
    file that looks finished. The result is readable by everyone (0644).
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"{path.parent}: no such directory")
    fd, name = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent
    )
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
