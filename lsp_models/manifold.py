"""Manifold projection: express each frame's speech feature by its nearest neighbours in
the target person's feature database (locally linear embedding, as in LSP)."""

from __future__ import annotations

import torch

from lsp_prep.errors import InputError


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
    weights (T, k) and the neighbour indices (T, k). Vectorised; ``chunk`` rows at a time
    bound memory.
    """
    if features.ndim != 2 or database.ndim != 2 or features.shape[1] != database.shape[1]:
        raise InputError(
            f"project needs (T, D) features and an (M, D) database, got "
            f"{tuple(features.shape)} and {tuple(database.shape)}"
        )
    if not 1 <= k <= len(database):
        raise InputError(f"k must be in [1, {len(database)}] for this database, got {k}")
    if not 0.0 <= blend <= 1.0:
        raise InputError(f"blend must be in [0, 1], got {blend}")
    out, weights, index = [], [], []
    scale = database.norm(dim=1).mean().clamp(min=1e-12)
    for s in range(0, len(features), chunk):
        x = features[s : s + chunk]  # (C, D)
        dist, idx = torch.cdist(x, database).topk(k, largest=False)  # (C, k)
        nb = database[idx]  # (C, k, D)
        diff = nb - x[:, None]  # (C, k, D)
        gram = diff @ diff.transpose(1, 2)  # (C, k, k)
        trace = gram.diagonal(dim1=1, dim2=2).sum(-1).clamp(min=1e-12)  # (C,)
        eye = torch.eye(k, dtype=x.dtype, device=x.device)
        gram = gram + (reg * trace)[:, None, None] * eye
        ones = torch.ones(len(x), k, 1, dtype=x.dtype, device=x.device)
        w = torch.linalg.solve(gram, ones)[..., 0]  # (C, k)
        w = w / w.sum(-1, keepdim=True)
        # a feature that coincides with a database entry is that entry, exactly
        exact = dist[:, 0] <= 1e-7 * scale
        w[exact] = 0.0
        w[exact, 0] = 1.0
        proj = (w[..., None] * nb).sum(1)  # (C, D)
        out.append(blend * proj + (1.0 - blend) * x)
        weights.append(w)
        index.append(idx)
    return torch.cat(out), torch.cat(weights), torch.cat(index)
