"""Stage caches: one ``.npz`` per cached stage, tagged with the key it was computed for and
a checksum of its arrays.

A stage's key (derived from the stage table in :mod:`lsp_prep.pipeline`) names the source
and every config section the stage depends on; a cache whose key differs counts as missing
and is recomputed. Writes are atomic, so an interrupted run never leaves a half-written
cache behind under the final name; a cache damaged on disk all the same (a truncated copy,
a flipped byte) fails to open or fails its SHA-256 and :func:`load` raises :class:`Damaged`,
so that the caller recomputes it and says so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

CACHE_DIR = ".lsp-cache"
"""Folder of the output directory holding one subfolder of stage caches per clip."""

_RESERVED = ("key", "checksum")
"""Entries of a cache file that are not the stage's arrays."""


class Damaged(Exception):
    """A cache file exists but cannot be read or fails its checksum; the message says why.
    Not an :class:`~lsp_prep.errors.LSPError`: the caller recomputes, nobody is refused."""


def checksum(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``arrays`` (in name order)."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8).data if a.size else b"")
    return h.hexdigest()


def save(path: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Store ``arrays`` with ``key`` and their checksum at ``path`` (atomically: temp name,
    then rename)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.npz")
    np.savez(tmp, key=np.array(key), checksum=np.array(checksum(arrays)), **arrays)
    os.replace(tmp, path)


def load(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The arrays stored at ``path`` for ``key``; None when missing or stale (another key,
    or written without a checksum by an older toolkit). Raises :class:`Damaged` when the
    file cannot be read or its arrays do not match their checksum."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "key" not in z.files or str(z["key"]) != key or "checksum" not in z.files:
                return None
            arrays = {k: z[k] for k in z.files if k not in _RESERVED}
            stored = str(z["checksum"])
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise Damaged(f"unreadable: {type(exc).__name__}: {exc}") from None
    if checksum(arrays) != stored:
        raise Damaged("its arrays do not match their checksum")
    return arrays


def drop(cache: Path) -> None:
    """Remove one clip's stage cache, and the cache folder once no clip uses it."""
    shutil.rmtree(cache, ignore_errors=True)
    try:
        cache.parent.rmdir()
    except OSError:
        pass  # missing, or other clips still have caches there
