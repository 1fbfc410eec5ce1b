"""Sliced evaluation: metrics per data source, kind (real/synthetic) and any provenance field.

A slice field is ``source``, ``kind``, ``label`` or a dotted path into the sample's metadata, e.g.
``params.light_time_of_day`` (the generator's record of the condition a frame was made under).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from vision.data.samples import Sample

MISSING = "(missing)"


def field_value(sample: Sample, field: str, kinds: Mapping[str, str] | None = None) -> str:
    if field == "source":
        return sample.source
    if field == "kind":
        return (kinds or {}).get(sample.source, "real")
    if field == "label":
        return sample.label
    value: Any = sample.meta
    for part in field.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return MISSING
        value = value[part]
    return str(value)


def slice_report(samples: Sequence[Sample], y_true: np.ndarray, y_pred: np.ndarray, fields: Sequence[str],
                 kinds: Mapping[str, str] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """``{field: {value: {"top1", "num_images"}}}`` over the given samples and predictions."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    correct = np.asarray(y_true) == np.asarray(y_pred)
    for field in fields:
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(field_value(s, field, kinds), []).append(i)
        out[field] = {v: {"top1": float(correct[idx].mean()), "num_images": len(idx)}
                      for v, idx in sorted(groups.items())}
    return out
