"""How long-running library functions report progress (prep stages, training, animate)."""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, int, "int | None"], None]
"""Called as ``progress(stage, done, total)``; ``total`` may be None when unknown."""


def no_progress(stage: str, done: int, total: int | None) -> None:
    """A :data:`ProgressFn` that reports nothing."""
    return None
