"""Stage caches: one ``.npz`` per cached stage, tagged with the key it was computed for.

A stage's key (derived from the stage table in :mod:`lsp_prep.pipeline`) names the source
and every config section the stage depends on; a cache whose key differs, or that cannot
be read, counts as missing and is recomputed. Writes are atomic, so an interrupted run
never leaves a half-written cache behind.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

CACHE_DIR = ".lsp-cache"
"""Folder of the output directory holding one subfolder of stage caches per clip."""


def save(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Store ``arrays`` with ``key`` at ``path`` (atomically: temp name, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    np.savez(tmp, key=np.array(key), **arrays)
    os.replace(tmp, path)


def load(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored at ``path`` for ``key``; None when missing, stale or damaged."""
    if not path.exists():
        return None
    try:
        with np.load(path) as z:
            if str(z["key"]) != key:
                return None
            return {k: z[k] for k in z.files if k != "key"}
    except (OSError, KeyError, ValueError):
        return None  # a damaged cache is recomputed


def drop(cache: Path) -> None:
    """Remove one clip's stage cache, and the cache folder once no clip uses it."""
    shutil.rmtree(cache, ignore_errors=True)
    try:
        cache.parent.rmdir()
    except OSError:
        pass  # missing, or other clips still have caches there
