"""Sliced metrics from provenance fields."""
from __future__ import annotations

import numpy as np

from vision.data.samples import Sample
from vision.metrics.slices import MISSING, slice_report


def test_slice_report_by_source_kind_and_provenance():
    def s(i, src, tod):
        meta = {"params": {"light_time_of_day": tod}} if tod else {}
        return Sample(f"/x/{i}.png", "a", src, f"{i}.png", meta)

    samples = [s(0, "real", None), s(1, "sim", "night"), s(2, "sim", "night"), s(3, "sim", "day")]
    y_true = np.array([0, 0, 0, 0])
    y_pred = np.array([0, 1, 0, 0])
    rep = slice_report(samples, y_true, y_pred, ["source", "kind", "params.light_time_of_day"],
                       kinds={"real": "real", "sim": "synthetic"})
    assert rep["source"] == {"real": {"top1": 1.0, "num_images": 1}, "sim": {"top1": 2 / 3, "num_images": 3}}
    assert rep["kind"]["synthetic"]["num_images"] == 3
    assert rep["params.light_time_of_day"]["night"] == {"top1": 0.5, "num_images": 2}
    assert rep["params.light_time_of_day"][MISSING]["num_images"] == 1
