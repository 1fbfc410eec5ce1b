"""Stratified, seeded train/val/test splits, saved to JSON so evaluation never sees training images."""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from vision.data.samples import Sample
from vision.errors import DataError
from vision.utils.io import atomic_write_json

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitSpec:
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        fr = (self.train, self.val, self.test)
        if min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise DataError(f"data.split fractions must be >= 0 and sum to 1, got train={self.train} "
                            f"val={self.val} test={self.test}")


def stratified_split(samples: Sequence[Sample], spec: SplitSpec) -> dict[str, list[Sample]]:
    """Split per (source, label) group with a seeded shuffle; every split must end non-empty."""
    groups: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    for s in samples:
        groups[(s.source, s.label)].append(s)
    out: dict[str, list[Sample]] = {k: [] for k in SPLITS}
    for gi, key in enumerate(sorted(groups)):
        items = sorted(groups[key], key=lambda s: s.key)
        rng = np.random.default_rng([spec.seed, gi])
        order = rng.permutation(len(items))
        n = len(items)
        n_val, n_test = round(n * spec.val), round(n * spec.test)
        if n_val + n_test >= n and n > 0:  # keep at least one training image per group
            n_test = max(0, min(n_test, n - 1 - n_val))
            n_val = max(0, min(n_val, n - 1 - n_test))
        picked = [items[i] for i in order]
        out["val"] += picked[:n_val]
        out["test"] += picked[n_val:n_val + n_test]
        out["train"] += picked[n_val + n_test:]
    out = {k: sorted(v, key=lambda s: s.key) for k, v in out.items()}  # canonical order (= a re-applied split)
    check_nonempty(out, len(samples))
    return out


def check_nonempty(splits: dict[str, list[Sample]], total: int) -> None:
    for name in SPLITS:
        if not splits.get(name):
            counts = {k: len(v) for k, v in splits.items()}
            raise DataError(f"split {name!r} is empty ({total} samples in total, split counts {counts}); "
                            f"add data or change data.split fractions")


def save_splits(path: str | Path, splits: dict[str, list[Sample]], spec: SplitSpec | None = None) -> Path:
    doc: dict[str, Any] = {
        "spec": None if spec is None else spec.__dict__,
        # per label for labelled images, per source for detection images (many boxes, no one label)
        "counts": {k: dict(sorted(Counter(getattr(s, "label", None) or s.source for s in v).items()))
                   for k, v in splits.items()},
        "splits": {k: sorted(s.key for s in v) for k, v in splits.items()},
    }
    return atomic_write_json(path, doc)


def keys_of(splits: dict[str, list[Sample]]) -> dict[str, list[str]]:
    return {k: sorted(s.key for s in v) for k, v in splits.items()}


def apply_saved(samples: Sequence[Sample], assignment: dict[str, list[str]], origin: str) -> dict[str, list[Sample]]:
    """Rebuild splits from saved sample keys; any sample missing on either side is an error."""
    by_key = {s.key: s for s in samples}
    out: dict[str, list[Sample]] = {}
    missing: list[str] = []
    assigned: set[str] = set()
    for name in SPLITS:
        keys = assignment.get(name)
        if keys is None:
            raise DataError(f"{origin}: missing split {name!r}")
        out[name] = []
        for k in keys:
            if k in assigned:
                raise DataError(f"{origin}: sample {k} is in more than one split")
            assigned.add(k)
            if k in by_key:
                out[name].append(by_key[k])
            else:
                missing.append(k)
        out[name].sort(key=lambda s: s.key)
    if missing:
        raise DataError(f"{origin}: {len(missing)} sample(s) of the saved split are not in the data, "
                        f"e.g. {missing[:3]}")
    new = sorted(set(by_key) - assigned)
    if new:
        raise DataError(f"{origin}: {len(new)} sample(s) in the data are in no saved split, e.g. {new[:3]}; "
                        f"make a new split (drop data.split_file) or restore the original data")
    check_nonempty(out, len(samples))
    return out


def load_split_file(path: str | Path) -> dict[str, list[str]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    try:
        return json.loads(path.read_text())["splits"]
    except (json.JSONDecodeError, KeyError) as e:
        raise DataError(f"{path}: unreadable split file ({e})") from e
