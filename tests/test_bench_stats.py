"""The paired seed comparison the refine benchmark reports (bench/_detection_runs.py)."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from _detection_runs import paired_comparison  # noqa: E402


def test_paired_comparison_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3); of the 8 sign patterns only +++ and --- reach |sum| 6
    c = paired_comparison([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert c["n"] == 3 and c["mean_diff"] == 2.0 and c["median_diff"] == 2.0
    assert c["se"] == pytest.approx(1 / math.sqrt(3), abs=1e-4) and c["t"] == pytest.approx(3.46, abs=0.01)
    assert (c["up"], c["down"]) == (3, 0)
    assert c["p_sign_flip"] == 0.25 and c["p_method"] == "exact"


def test_paired_comparison_heavy_tail_and_sampled_p():
    # one large gain among small losses: the mean is positive, the median negative, and the test is unconvinced
    before = [0.3] * 8
    after = [0.28] * 7 + [0.6]
    c = paired_comparison(before, after)
    assert c["mean_diff"] > 0 > c["median_diff"]
    assert (c["up"], c["down"]) == (1, 7)
    assert c["p_sign_flip"] > 0.2
    # the same shift on 20 seeds, all up: sampled sign patterns; the exact p (2 / 2^20) is below what 100,000
    # samples resolve, so the sampled p is its floor 1 / 100,001, never 0
    c = paired_comparison([0.0] * 20, [0.01] * 20)
    assert c["p_method"] == "100000 random" and 0 < c["p_sign_flip"] < 1e-3


def test_paired_comparison_refuses_unpaired():
    with pytest.raises(ValueError, match="equally long"):
        paired_comparison([0.1, 0.2], [0.3])
