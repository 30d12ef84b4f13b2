"""Manifold projection: express each frame's speech feature by its nearest neighbours in
the target person's feature database (locally linear embedding, as in LSP)."""

from __future__ import annotations

import torch

from lsp_prep.errors import InputError


class Manifold:
    """A feature database (M, D) ready for repeated projection.

    Finding the neighbours is one (T, D) x (D, M) matmul per call, against the database's
    squared norms computed here once: ``|x - n|^2 = |x|^2 - 2 x.n + |n|^2``, and ``|x|^2``
    does not change a row's ranking. (``torch.cdist`` recomputed the norms and copied the
    whole database into an augmented matrix on every call: ~3x the time at 18k x 1024, and
    most of a streaming call of a few frames.) The ``k`` winners' distances are then
    recomputed from their differences, exactly, and sorted by them. The database must not
    change afterwards.
    """

    def __init__(self, database: torch.Tensor) -> None:
        if database.ndim != 2 or len(database) == 0:
            raise InputError(
                f"the database must be (M, D) with M >= 1, got {tuple(database.shape)}"
            )
        self.database = database  # (M, D)
        self.sq_norms = (database * database).sum(1)  # (M,)
        self.scale = database.norm(dim=1).mean().clamp(min=1e-12)  # "coincides" is relative

    def __len__(self) -> int:
        return len(self.database)

    def project(
        self,
        features: torch.Tensor,
        *,
        k: int = 10,
        reg: float = 1e-3,
        blend: float = 1.0,
        chunk: int = 4096,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``project(features, self.database, ...)``: see there."""
        database = self.database
        if features.ndim != 2 or features.shape[1] != database.shape[1]:
            raise InputError(
                f"project needs (T, D) features and an (M, D) database, got "
                f"{tuple(features.shape)} and {tuple(database.shape)}"
            )
        if not 1 <= k <= len(database):
            raise InputError(f"k must be in [1, {len(database)}] for this database, got {k}")
        if not 0.0 <= blend <= 1.0:
            raise InputError(f"blend must be in [0, 1], got {blend}")
        out, weights, index = [], [], []
        eye = torch.eye(k, dtype=features.dtype, device=features.device)
        for s in range(0, len(features), chunk):
            x = features[s : s + chunk]  # (C, D)
            # |n|^2 - 2 x.n: the squared distance less |x|^2, which is the same along a row
            score = torch.addmm(self.sq_norms, x, database.T, alpha=-2.0)  # (C, M)
            idx = score.topk(k, dim=1, largest=False).indices  # (C, k)
            dist, order = (database[idx] - x[:, None]).norm(dim=-1).sort(dim=1)  # (C, k)
            idx = idx.gather(1, order)  # nearest first, by exact distances
            nb = database[idx]  # (C, k, D)
            diff = nb - x[:, None]  # (C, k, D)
            gram = diff @ diff.transpose(1, 2)  # (C, k, k)
            trace = gram.diagonal(dim1=1, dim2=2).sum(-1).clamp(min=1e-12)  # (C,)
            gram = gram + (reg * trace)[:, None, None] * eye
            ones = torch.ones(len(x), k, 1, dtype=x.dtype, device=x.device)
            w = torch.linalg.solve(gram, ones)[..., 0]  # (C, k)
            w = w / w.sum(-1, keepdim=True)
            # a feature that coincides with a database entry is that entry, exactly
            exact = dist[:, 0] <= 1e-7 * self.scale
            w[exact] = 0.0
            w[exact, 0] = 1.0
            proj = (w[..., None] * nb).sum(1)  # (C, D)
            out.append(blend * proj + (1.0 - blend) * x)
            weights.append(w)
            index.append(idx)
        return torch.cat(out), torch.cat(weights), torch.cat(index)


def project(
    features: torch.Tensor,
    database: torch.Tensor,
    *,
    k: int = 10,
    reg: float = 1e-3,
    blend: float = 1.0,
    chunk: int = 4096,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Project ``features`` (T, D) onto the manifold spanned by ``database`` (M, D).

    For each feature the ``k`` nearest database entries (Euclidean) are found and the
    barycentric weights w minimising ``|x - sum_j w_j n_j|^2`` subject to ``sum w = 1`` are
    solved in closed form from the local Gram matrix, regularised by ``reg`` times its
    trace so near-duplicate neighbours never make it singular; a feature that coincides
    with a database entry (within 1e-7 of the entries' mean norm) gets exactly it. Returns
    the blended features ``blend * projected + (1 - blend) * features`` (T, D), the
    weights (T, k) and the neighbour indices (T, k), nearest first. Vectorised; ``chunk``
    rows at a time bound memory. A caller projecting against the same database again and
    again keeps a ``Manifold`` instead (its setup is a pass over the database).
    """
    if features.ndim != 2 or database.ndim != 2 or features.shape[1] != database.shape[1]:
        raise InputError(
            f"project needs (T, D) features and an (M, D) database, got "
            f"{tuple(features.shape)} and {tuple(database.shape)}"
        )
    if not 1 <= k <= len(database):
        raise InputError(f"k must be in [1, {len(database)}] for this database, got {k}")
    return Manifold(database).project(features, k=k, reg=reg, blend=blend, chunk=chunk)
