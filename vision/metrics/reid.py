"""Re-identification evaluation: the Market-1501 protocol, k-reciprocal re-ranking, plots.

Protocol (:func:`evaluate`): every query is ranked against the gallery by distance; gallery images of
the query's identity taken by the query's camera are removed from its ranking (they are too easy: same
camera, usually the same walk), and so are junk images (identity ``-1``). Then per query

- CMC: ``cmc[k] = 1`` when a correct match is within the first ``k + 1`` results (rank-1, 5, 10 ...);
- AP: the mean of the precision at each correct match (non-interpolated, as torchreid / fast-reid);
- INP (Ye et al. 2021): ``num_matches / rank of the hardest (last) match``, how much of the list must be
  checked to find every match.

rank-k, mAP and mINP average over the *valid* queries: a query left with no correct match in its ranking
(its identity is absent from the gallery, or only seen by its own camera) cannot be scored; such queries
are counted and listed (``num_invalid``, ``invalid_queries``), never silently dropped.
``cross_camera_only=True`` also removes every gallery image from the query's camera (whatever the
identity): only matches across cameras count; a single-camera set is an error there.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

JUNK = -1


class ReidEvalError(ValueError):
    """The evaluation cannot be done as asked (e.g. cross-camera on a single camera)."""


def distance_matrix(query: np.ndarray, gallery: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """``[Q, G]`` distances: ``cosine`` = 1 - cosine similarity, ``euclidean`` = L2 distance."""
    q = np.asarray(query, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"embeddings must be [Q, D] and [G, D], got {q.shape} and {g.shape}")
    if metric == "cosine":
        qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        return 1.0 - qn @ gn.T
    if metric == "euclidean":
        d2 = (q ** 2).sum(1)[:, None] + (g ** 2).sum(1)[None, :] - 2.0 * q @ g.T
        return np.sqrt(np.maximum(d2, 0.0))
    raise ValueError(f"distance metric must be 'cosine' or 'euclidean', got {metric!r}")


def check_cross_camera(cams: Sequence[int], what: str = "the evaluation set") -> None:
    """Raise ReidEvalError when cross-camera evaluation is impossible (one camera, or unknown cameras)."""
    c = np.asarray(cams)
    if (c < 0).any():
        raise ReidEvalError(f"cross-camera evaluation needs the camera of every image; {what} has "
                            f"{int((c < 0).sum())} image(s) without one")
    if len(np.unique(c)) < 2:
        raise ReidEvalError(f"cross-camera evaluation needs at least two cameras, {what} has only one "
                            f"(camera {c[0] if len(c) else '?'}); turn it off (task.cross_camera=false) or "
                            f"evaluate on multi-camera data")


def evaluate(distmat: np.ndarray, q_ids: Sequence[int], g_ids: Sequence[int], q_cams: Sequence[int],
             g_cams: Sequence[int], max_rank: int = 50, exclude_same_camera: bool = True,
             cross_camera_only: bool = False, query_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The Market-1501 protocol on a ``[Q, G]`` distance matrix (identities: ints, -1 = junk; cameras:
    ints, -1 = unknown, never equal to another camera).

    Returns ``rank1, rank5, rank10, map, minp, cmc`` (list, ``max_rank`` long), ``num_queries``,
    ``num_valid``, ``num_invalid``, ``invalid_queries`` (names or indices) and per-query ``ap``/``inp``/
    ``first_match`` arrays (NaN / -1 for invalid queries).
    """
    d = np.asarray(distmat, dtype=np.float64)
    q_ids, g_ids = np.asarray(q_ids), np.asarray(g_ids)
    q_cams, g_cams = np.asarray(q_cams), np.asarray(g_cams)
    nq, ng = d.shape
    if (len(q_ids), len(g_ids), len(q_cams), len(g_cams)) != (nq, ng, nq, ng):
        raise ValueError(f"distmat is {nq}x{ng} but got {len(q_ids)} query ids, {len(g_ids)} gallery ids, "
                         f"{len(q_cams)} query cameras, {len(g_cams)} gallery cameras")
    if cross_camera_only:
        check_cross_camera(np.concatenate([q_cams, g_cams]))
    max_rank = max(1, int(max_rank))
    cmc = np.zeros((nq, max_rank))
    ap = np.full(nq, np.nan)
    inp = np.full(nq, np.nan)
    first = np.full(nq, -1)
    valid = np.zeros(nq, dtype=bool)
    order = np.argsort(d, axis=1, kind="stable")
    for i in range(nq):
        o = order[i]
        same_cam = (g_cams[o] == q_cams[i]) & (q_cams[i] >= 0)
        remove = g_ids[o] == JUNK
        if cross_camera_only:
            remove |= same_cam
        elif exclude_same_camera:
            remove |= same_cam & (g_ids[o] == q_ids[i])
        match = (g_ids[o] == q_ids[i])[~remove]
        if not match.any():
            continue
        valid[i] = True
        hits = np.flatnonzero(match)
        first[i] = hits[0]
        if hits[0] < max_rank:
            cmc[i, hits[0]:] = 1.0
        precision = np.arange(1, len(hits) + 1) / (hits + 1.0)
        ap[i] = precision.mean()
        inp[i] = len(hits) / (hits[-1] + 1.0)
    names = list(query_names) if query_names is not None else list(range(nq))
    n_valid = int(valid.sum())
    curve = cmc[valid].mean(0) if n_valid else np.zeros(max_rank)

    def at(k: int) -> float:
        return float(curve[min(k, max_rank) - 1])

    return {"rank1": at(1), "rank5": at(5), "rank10": at(10),
            "map": float(np.nanmean(ap)) if n_valid else 0.0, "minp": float(np.nanmean(inp)) if n_valid else 0.0,
            "cmc": [float(v) for v in curve], "num_queries": nq, "num_gallery": ng, "num_valid": n_valid,
            "num_invalid": nq - n_valid, "invalid_queries": [names[i] for i in np.flatnonzero(~valid)],
            "ap": ap, "inp": inp, "first_match": first}


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The JSON-able part of an :func:`evaluate` result (no per-query arrays)."""
    return {k: v for k, v in result.items() if k not in ("ap", "inp", "first_match")}


# -- k-reciprocal re-ranking ------------------------------------------------------------------------------
def re_rank(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, k1: int = 20, k2: int = 6,
            lambda_value: float = 0.3) -> np.ndarray:
    """k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with
    k-reciprocal Encoding", CVPR 2017). Returns the re-ranked ``[Q, G]`` distance
    ``(1 - lambda) * Jaccard + lambda * original`` (original: squared distances scaled per row to [0, 1]).

    Every probe and gallery image gets a k-reciprocal neighbour set R(p, k1) (p is in the k1 nearest of each
    member and each member in the k1 nearest of p), expanded by the R(., k1/2) sets of its members that
    overlap it by more than 2/3; encoded as a vector of Gaussian-weighted memberships, averaged over the k2
    nearest neighbours (local query expansion); the Jaccard distance of two encodings is
    ``1 - sum(min) / sum(max)``.
    """
    q_g, q_q, g_g = (np.asarray(a, dtype=np.float64) for a in (q_g, q_q, g_g))
    nq, ng = q_g.shape
    if q_q.shape != (nq, nq) or g_g.shape != (ng, ng):
        raise ValueError(f"re_rank: q_q must be {nq}x{nq} and g_g {ng}x{ng}, got {q_q.shape} and {g_g.shape}")
    if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"re_rank: k1, k2 >= 1 and lambda in [0, 1] (got {k1}, {k2}, {lambda_value})")
    n = nq + ng
    dist = np.block([[q_q, q_g], [q_g.T, g_g]]) ** 2
    dist = dist / np.maximum(dist.max(axis=1, keepdims=True), 1e-12)
    rank = np.argsort(dist, axis=1, kind="stable")
    half = min(int(np.around(k1 / 2.0)), n - 1)  # as the authors' code: from k1 before clipping
    k1 = min(k1, n - 1)

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = rank[i, :k + 1]
        backward = rank[forward, :k + 1]
        return forward[(backward == i).any(axis=1)]

    V = np.zeros((n, n))
    for i in range(n):
        r = reciprocal(i, k1)
        expanded = r
        for c in r:
            rc = reciprocal(int(c), half)
            if len(np.intersect1d(rc, r)) > 2.0 / 3.0 * len(rc):
                expanded = np.append(expanded, rc)
        expanded = np.unique(expanded)
        w = np.exp(-dist[i, expanded])
        V[i, expanded] = w / w.sum()
    if k2 > 1:
        V = np.stack([V[rank[i, :min(k2, n)]].mean(axis=0) for i in range(n)])
    jaccard = np.empty((nq, ng))
    for i in range(nq):
        inter = np.minimum(V[i][None, :], V[nq:]).sum(axis=1)
        union = np.maximum(V[i][None, :], V[nq:]).sum(axis=1)
        jaccard[i] = 1.0 - inter / np.maximum(union, 1e-12)
    return (1.0 - lambda_value) * jaccard + lambda_value * dist[:nq, nq:]


# -- plots --------------------------------------------------------------------------------------------
def plot_cmc(curves: dict[str, Sequence[float]], path: str, title: str = "CMC", max_rank: int = 20) -> str:
    """CMC curves (``name -> cmc list``) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=110)
    for name, curve in curves.items():
        c = list(curve)[:max_rank]
        if c:
            ax.plot(range(1, len(c) + 1), c, marker="o" if len(c) <= 20 else None, ms=3, label=name)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_ranked_gallery(queries: Sequence[dict[str, Any]], path: str, top_k: int = 10,
                        thumb: tuple[int, int] = (64, 128), title: str = "ranked gallery") -> str:
    """One row per query: the query crop, then its ``top_k`` gallery results (green border = same
    identity, red = another; excluded same-camera matches are not shown). Each query dict has ``path``,
    ``label`` and ``results``: a list of ``{"path", "match": bool, "distance"}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    rows = max(1, len(queries))
    fig, axes = plt.subplots(rows, top_k + 1, figsize=(0.85 * (top_k + 1), 1.75 * rows), dpi=100, squeeze=False)

    def show(ax, p: str, colour: str | None, text: str) -> None:
        try:
            with Image.open(p) as im:
                img = np.asarray(im.convert("RGB").resize(thumb))
        except OSError:
            img = np.zeros((thumb[1], thumb[0], 3), np.uint8)
        ax.imshow(img)
        ax.set_xticks([])
        ax.set_yticks([])
        if colour:
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(3)
        ax.set_title(text, fontsize=6)

    for r in range(rows):
        for ax in axes[r]:
            ax.axis("off")
        if r >= len(queries):
            continue
        q = queries[r]
        axes[r][0].axis("on")
        show(axes[r][0], q["path"], "black", f"query\n{q.get('label', '')}"[:40])
        for c, res in enumerate(q["results"][:top_k], 1):
            axes[r][c].axis("on")
            show(axes[r][c], res["path"], "green" if res["match"] else "red", f"{c}: {res['distance']:.3f}")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
