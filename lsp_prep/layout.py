"""The LSP 73-point landmark layout, loaded from ``manifests/lsp73.toml`` and validated."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
import tomllib

from lsp_prep.constants import N_LSP_POINTS, N_MESH_POINTS, N_MOUTH_POINTS
from lsp_prep.errors import InputError


@dataclass(frozen=True)
class DrawPart:
    """One polyline of the feature map, in LSP indices."""

    part: str
    points: tuple[int, ...]
    closed: bool


@dataclass(frozen=True)
class Layout:
    """A semantic landmark layout defined on MediaPipe Face Mesh indices."""

    name: str
    mediapipe_index: np.ndarray
    """(73,) MediaPipe Face Mesh index of each LSP point."""
    groups: dict[str, tuple[int, ...]]
    """Group name -> LSP indices it owns."""
    sets: dict[str, tuple[int, ...]]
    """Named subsets (``mouth``, ``eyes``, ``stable``, ...) in LSP indices."""
    draw: tuple[DrawPart, ...]
    """Polylines of the feature map in painting order."""

    @property
    def n_points(self) -> int:
        return len(self.mediapipe_index)

    @property
    def mouth(self) -> np.ndarray:
        """(25,) LSP indices of the mouth-related points: jaw 4-10 then lips 46-63."""
        return np.asarray(self.sets["mouth"])

    @property
    def outer_eye_corners(self) -> tuple[int, int]:
        """LSP indices of the right and left outer eye corners (27, 33), whose distance
        sets the object-space unit (:data:`lsp_prep.constants.EYE_DISTANCE_CM`)."""
        a, b = self.sets["outer_eye_corners"]
        return a, b

    def from_mesh(self, mesh: np.ndarray) -> np.ndarray:
        """Select LSP points from Face Mesh points: (..., 478, D) -> (..., 73, D)."""
        if mesh.shape[-2] != N_MESH_POINTS:
            raise InputError(f"expected (..., {N_MESH_POINTS}, D) mesh points, got {mesh.shape}")
        return mesh[..., self.mediapipe_index, :]


def parse_layout(data: dict) -> Layout:
    """Validate a layout manifest (already parsed TOML) and build a :class:`Layout`."""
    try:
        n = int(data["n_points"])
        index = np.full(n, -1, np.int64)
        groups: dict[str, tuple[int, ...]] = {}
        for g in data["groups"]:
            first, pts = int(g["first"]), [int(p) for p in g["mediapipe"]]
            lsp = tuple(range(first, first + len(pts)))
            if lsp and (lsp[0] < 0 or lsp[-1] >= n):
                raise InputError(f"layout group {g['name']!r} runs outside 0..{n - 1}")
            if (index[list(lsp)] >= 0).any():
                raise InputError(f"layout group {g['name']!r} overlaps another group")
            index[list(lsp)] = pts
            groups[g["name"]] = lsp
        sets = {k: tuple(int(i) for i in v) for k, v in data.get("sets", {}).items()}
        draw = tuple(
            DrawPart(d["part"], tuple(int(i) for i in d["points"]), bool(d.get("closed", False)))
            for d in data.get("draw", [])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"layout manifest is malformed: {exc!r}") from None
    if (index < 0).any():
        missing = np.flatnonzero(index < 0).tolist()
        raise InputError(f"layout leaves LSP points {missing} without a MediaPipe index")
    if (index >= N_MESH_POINTS).any():
        raise InputError(f"layout uses MediaPipe indices >= {N_MESH_POINTS}")
    if len(set(index.tolist())) != n:
        raise InputError("layout maps two LSP points to the same MediaPipe index")
    for name, members in [*sets.items(), *((d.part, d.points) for d in draw)]:
        if any(not 0 <= i < n for i in members):
            raise InputError(f"layout set or drawing part {name!r} has indices outside 0..{n - 1}")
    if "mouth" in sets and len(sets["mouth"]) != N_MOUTH_POINTS:
        raise InputError(f"layout set 'mouth' must have {N_MOUTH_POINTS} points")
    return Layout(str(data.get("name", "layout")), index, groups, sets, draw)


@lru_cache(maxsize=4)
def load_layout(name: str = "lsp73") -> Layout:
    """Load a layout manifest shipped in ``manifests/`` by name."""
    path = resources.files("manifests").joinpath(f"{name}.toml")
    if not path.is_file():
        raise InputError(f"no layout manifest named {name!r} in manifests/")
    layout = parse_layout(tomllib.loads(path.read_text()))
    if name == "lsp73" and layout.n_points != N_LSP_POINTS:
        raise InputError(f"lsp73 layout must have {N_LSP_POINTS} points")
    return layout


@lru_cache(maxsize=1)
def mesh_mirror() -> np.ndarray:
    """(478,) Face Mesh's left-right correspondence, ``manifests/facemesh_mirror.toml``:
    point ``i`` of a mirrored face is point ``mirror[i]`` of the face itself."""
    data = tomllib.loads(resources.files("manifests").joinpath("facemesh_mirror.toml").read_text())
    mirror = np.asarray(data["mirror"], np.int64)
    n = N_MESH_POINTS
    if mirror.shape != (n,) or not np.array_equal(np.sort(mirror), np.arange(n)):
        raise InputError(f"facemesh_mirror must be a permutation of 0..{n - 1}")
    if not np.array_equal(mirror[mirror], np.arange(n)):
        raise InputError("facemesh_mirror must be its own inverse (left <-> right)")
    mirror.setflags(write=False)
    return mirror
