"""Duplicates, near duplicates, split leaks and uniqueness, without any model download.

Every image gets a small perceptual embedding computed here with numpy: the image is converted to
grayscale, resized to 32x32 and transformed with a 2-D DCT; the 8x8 lowest frequencies (without the DC
term) give a 63-bit perceptual hash (bit = coefficient above their median) and the 16x16 lowest (without
DC), L2-normalized, the float embedding. Two images are

* **exact duplicates** when their files have the same sha256;
* **near duplicates** when their hashes differ in at most ``threshold`` bits *and* the cosine similarity
  of their embeddings is at least ``min_similarity``; groups are the connected components.

A **leak** is a near (or exact) duplicate pair whose ``split`` fields differ (both set). **Uniqueness**
is the mean cosine distance to the ``k`` nearest neighbours, scaled to [0, 1] by the largest value.

:func:`find_duplicates` writes per sample (``<brain_key>_`` prefix): ``sha256``, ``phash`` (hex),
``exact_group`` / ``near_group`` (ints, None when alone), ``near_dups`` (keys of its near duplicates),
``leak`` (bool), ``leak_splits`` and ``uniqueness``; registers the embeddings as a FiftyOne brain
similarity index under ``brain_key`` (sort by similarity in the App); and stores the summary dict in
``dataset.info["brain"][brain_key]``. Samples whose file is missing or unreadable are listed in the
summary's ``problems``.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from collections import defaultdict
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["image_signature", "hamming_matrix", "find_duplicates", "DCT_SIZE"]

DCT_SIZE = 32
HASH_SIZE = 8
EMBED_SIZE = 16


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


_DCT = _dct_matrix(DCT_SIZE)


def image_signature(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``(hash_bits, embedding)`` of one image: 63 bools and a unit float32 vector of 255 values."""
    with Image.open(path) as im:
        im.draft("L", (DCT_SIZE * 4, DCT_SIZE * 4))  # fast JPEG downscale while decoding
        g = np.asarray(im.convert("L").resize((DCT_SIZE, DCT_SIZE), Image.Resampling.BOX), dtype=np.float64)
    coef = _DCT @ g @ _DCT.T
    low = coef[:HASH_SIZE, :HASH_SIZE].ravel()[1:]
    bits = low > np.median(low)
    emb = coef[:EMBED_SIZE, :EMBED_SIZE].ravel()[1:].astype(np.float64)
    norm = np.linalg.norm(emb)
    emb = emb / norm if norm > 0 else emb
    return bits, emb.astype(np.float32)


def hamming_matrix(bits: np.ndarray, other: np.ndarray | None = None) -> np.ndarray:
    """Pairwise Hamming distances between rows of two bool matrices (``other`` defaults to ``bits``)."""
    a = bits.astype(np.int32)
    b = a if other is None else other.astype(np.int32)
    return (a @ (1 - b).T + (1 - a) @ b.T).astype(np.int32)


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def _groups(n: int, pairs: list[tuple[int, int]]) -> list[int | None]:
    uf = _UnionFind(n)
    for i, j in pairs:
        uf.union(i, j)
    roots = [uf.find(i) for i in range(n)]
    sizes = defaultdict(int)
    for r in roots:
        sizes[r] += 1
    ids: dict[int, int] = {}
    out: list[int | None] = []
    for r in roots:
        if sizes[r] < 2:
            out.append(None)
        else:
            out.append(ids.setdefault(r, len(ids)))
    return out


def find_duplicates(collection, brain_key: str = "dedup", *, threshold: int = 8, min_similarity: float = 0.9,
                    k: int = 3, split_field: str = "split", similarity_index: bool = True,
                    chunk: int = 1024) -> dict[str, Any]:
    """Exact / near duplicates, split leaks and uniqueness over a dataset or view (see the module doc).

    Returns the summary: counts, the groups (as sample keys), the leaks (pairs of keys with their
    splits), problems (unreadable files) and the settings.
    """
    if not brain_key.isidentifier():
        raise ValueError(f"brain_key must be a Python identifier, got {brain_key!r}")
    dataset = collection._dataset
    ids, keys, paths, splits = collection.values(["id", "key", "filepath", split_field]) \
        if split_field in collection.get_field_schema() else (*collection.values(["id", "key", "filepath"]),
                                                              [None] * len(collection))
    ok_idx, bits, embs, digests, problems = [], [], [], [], []
    for i, p in enumerate(paths):
        if not os.path.isfile(p):
            problems.append({"where": p, "key": keys[i], "code": "missing_image", "reason": f"{p} not found"})
            continue
        try:
            b, e = image_signature(p)
            d = _sha256(p)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
            problems.append({"where": p, "key": keys[i], "code": "unreadable_image", "reason": str(err)})
            continue
        ok_idx.append(i)
        bits.append(b)
        embs.append(e)
        digests.append(d)
    n = len(ok_idx)
    B = np.array(bits, dtype=bool).reshape(n, -1)
    E = np.array(embs, dtype=np.float32).reshape(n, -1)
    ok_keys = [keys[i] for i in ok_idx]
    ok_splits = [splits[i] for i in ok_idx]

    # exact duplicates
    by_digest: dict[str, list[int]] = defaultdict(list)
    for j, d in enumerate(digests):
        by_digest[d].append(j)
    exact_pairs = [(g[0], x) for g in by_digest.values() if len(g) > 1 for x in g[1:]]

    # near duplicates (chunked all-pairs) + uniqueness
    near_pairs: list[tuple[int, int]] = []
    knn = np.zeros(n, dtype=np.float64)
    kk = max(1, min(k, n - 1))
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        ham = hamming_matrix(B[start:stop], B)
        sim = E[start:stop] @ E.T
        rows = np.arange(start, stop)
        hit = (ham <= threshold) & (sim >= min_similarity)
        hit[rows - start, rows] = False
        for a, b in zip(*np.nonzero(hit)):
            if start + a < b:
                near_pairs.append((int(start + a), int(b)))
        if n > 1:
            dist = 1.0 - sim.astype(np.float64)
            dist[rows - start, rows] = np.inf
            part = np.partition(dist, kk - 1, axis=1)[:, :kk]
            knn[start:stop] = np.clip(part, 0.0, None).mean(axis=1)
    uniq = knn / knn.max() if n > 1 and knn.max() > 0 else np.ones(n)

    all_pairs = sorted(set(near_pairs) | {tuple(sorted(p)) for p in exact_pairs})
    exact_group = _groups(n, exact_pairs)
    near_group = _groups(n, all_pairs)
    neighbours: dict[int, set[int]] = defaultdict(set)
    for a, b in all_pairs:
        neighbours[a].add(b)
        neighbours[b].add(a)
    leaks = []
    leak_splits: dict[int, set[str]] = defaultdict(set)
    for a, b in all_pairs:
        sa, sb = ok_splits[a], ok_splits[b]
        if sa is not None and sb is not None and sa != sb:
            leaks.append({"a": ok_keys[a], "b": ok_keys[b], "splits": [sa, sb],
                          "exact": digests[a] == digests[b],
                          "hamming": int(np.count_nonzero(B[a] != B[b])),
                          "similarity": round(float(E[a] @ E[b]), 4)})
            leak_splits[a].update((sa, sb))
            leak_splits[b].update((sa, sb))

    # write per-sample results (one bulk update per field)
    pre = f"{brain_key}_"
    ok_ids = [ids[i] for i in ok_idx]
    values = {
        "sha256": digests,
        "phash": ["%016x" % int("".join("1" if x else "0" for x in row), 2) for row in B],
        "exact_group": exact_group,
        "near_group": near_group,
        "near_dups": [sorted(ok_keys[x] for x in neighbours[j]) for j in range(n)],
        "leak": [j in leak_splits for j in range(n)],
        "leak_splits": [sorted(leak_splits[j]) for j in range(n)],
        "uniqueness": [float(u) for u in uniq],
    }
    if n:
        import fiftyone.core.fields as fof

        types = {"sha256": (fof.StringField, {}), "phash": (fof.StringField, {}),
                 "exact_group": (fof.IntField, {}), "near_group": (fof.IntField, {}),
                 "near_dups": (fof.ListField, {"subfield": fof.StringField}), "leak": (fof.BooleanField, {}),
                 "leak_splits": (fof.ListField, {"subfield": fof.StringField}),
                 "uniqueness": (fof.FloatField, {})}
        schema = dataset.get_field_schema()
        for name, (ftype, kw) in types.items():
            if pre + name not in schema:
                dataset.add_sample_field(pre + name, ftype, **kw)
        target = dataset.select(ok_ids, ordered=True)
        for name, vals in values.items():
            target.set_values(pre + name, vals)
    if similarity_index and n > 1:
        import fiftyone.brain as fob

        if brain_key in dataset.list_brain_runs():
            dataset.delete_brain_run(brain_key)
        fob.compute_similarity(dataset.select(ok_ids, ordered=True), embeddings=E, brain_key=brain_key,
                               backend="sklearn", metric="cosine", progress=False)

    def _key_groups(group: list[int | None]) -> list[list[str]]:
        out: dict[int, list[str]] = defaultdict(list)
        for j, g in enumerate(group):
            if g is not None:
                out[g].append(ok_keys[j])
        return [out[g] for g in sorted(out)]

    exact_groups, near_groups = _key_groups(exact_group), _key_groups(near_group)
    summary = {
        "brain_key": brain_key,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "samples": len(keys), "analysed": n,
        "exact_duplicate_groups": len(exact_groups),
        "exact_duplicates": sum(len(g) - 1 for g in exact_groups),
        "near_duplicate_groups": len(near_groups),
        "near_duplicates": sum(len(g) - 1 for g in near_groups),
        "leaks": len(leaks), "leaked_samples": len(leak_splits),
        "exact_groups": exact_groups, "near_groups": near_groups, "leak_pairs": leaks,
        "uniqueness": {"min": float(uniq.min()) if n else None, "mean": float(uniq.mean()) if n else None},
        "problems": problems,
        "fields": [pre + name for name in values],
        "settings": {"threshold": threshold, "min_similarity": min_similarity, "k": k, "split_field": split_field,
                     "hash_bits": HASH_SIZE * HASH_SIZE - 1, "embedding_dim": EMBED_SIZE * EMBED_SIZE - 1},
    }
    dataset.reload()
    brain = dict(dataset.info.get("brain", {}))
    brain[brain_key] = summary
    dataset.info["brain"] = brain
    dataset.save()
    return summary
