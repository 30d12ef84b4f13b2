"""Plot helpers shared by the dataset and run reports: one look for every figure, and the
time axes of per-frame arrays."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

COLORS = (
    "#2f6fde",
    "#e0672b",
    "#2aa876",
    "#b03ab5",
    "#c9a227",
    "#5b6472",
    "#d43f5e",
    "#17becf",
    "#8c564b",
    "#7f7f7f",
)
"""Line colours, in order of use."""

RC: dict[str, Any] = {
    "font.size": 9.5,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e7ee",
    "grid.linewidth": 0.7,
    "axes.edgecolor": "#9aa3b0",
    "legend.frameon": False,
    "legend.fontsize": 8.5,
}


@contextmanager
def plot_style() -> Iterator[None]:
    """Every figure of a report is made and saved inside this (matplotlib's rc context)."""
    from cycler import cycler
    from matplotlib import rc_context

    rc: Any = {**RC, "axes.prop_cycle": cycler(color=COLORS)}
    with rc_context(rc):
        yield


def figure(
    width: float, height: float, *, nrows: int = 1, ncols: int = 1, sharex: bool = False
) -> tuple[Figure, np.ndarray]:
    """A matplotlib Figure (no pyplot, no backend state) of ``width`` x ``height`` inches
    and its axes as a flat array; call inside :func:`plot_style`."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=sharex, squeeze=False)
    return fig, axes.ravel()


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of every run of True in ``mask`` (N,)."""
    m = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(np.diff(m.astype(np.int8)))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def shade(ax: Axes, mask: np.ndarray, *, fps: float, color: str, alpha: float, label: str) -> None:
    """Shade the times where ``mask`` (N,) is True across the whole height of ``ax``."""
    spans = runs(mask)
    for k, (a, n) in enumerate(spans):
        ax.axvspan(
            a / fps, (a + n) / fps, color=color, alpha=alpha, lw=0, label=label if k == 0 else None
        )


def legend(ax: Axes, *, ncol: int = 4) -> None:
    """The legend above the axes' top-right corner, clear of the data and the title."""
    ax.legend(ncol=ncol, loc="lower right", bbox_to_anchor=(1.0, 1.0), borderaxespad=0.2)
