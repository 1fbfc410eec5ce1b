"""The paired seed comparison the refine benchmark reports (bench/_detection_runs.py)."""
from __future__ import annotations

import itertools
import math
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from _detection_runs import paired_comparison, sign_flip_p  # noqa: E402


def test_paired_comparison_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, se 1/sqrt(3); of the 8 sign patterns only +++ and --- reach |sum| 6
    c = paired_comparison([0.0, 0.0, 0.0], [1.0, 2.0, 3.0])
    assert c["n"] == 3 and c["mean_diff"] == 2.0 and c["median_diff"] == 2.0
    assert c["se"] == pytest.approx(1 / math.sqrt(3), rel=1e-3) and c["t"] == pytest.approx(3.46, abs=0.01)
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
    # the same shift on 20 seeds, all up: exact still (meet in the middle), only +...+ and -...- reach it
    c = paired_comparison([0.0] * 20, [0.01] * 20)
    assert c["p_method"] == "exact" and c["p_sign_flip"] == float(f"{2 / 2 ** 20:.3g}")
    # beyond exact_up_to: sampled sign patterns; the exact p is below what 100,000 samples resolve, so the
    # sampled p is its floor 1 / 100,001, never 0
    c = paired_comparison([0.0] * 20, [0.01] * 20, exact_up_to=16)
    assert c["p_method"] == "100000 random" and 0 < c["p_sign_flip"] < 1e-3


def test_sign_flip_p_matches_brute_force():
    rng = random.Random(3)
    for n in (1, 2, 5, 9, 12):
        for _ in range(5):
            # rounded to a coarse grid so that ties (|sum| equal to the observed one) occur and must count
            d = [round(rng.gauss(0.01, 0.05), 2) for _ in range(n)]
            obs = abs(sum(d))
            brute = sum(abs(sum(s * x for s, x in zip(signs, d))) >= obs - 1e-12
                        for signs in itertools.product((1, -1), repeat=n)) / 2 ** n
            p, method = sign_flip_p(d)
            assert method == "exact" and p == pytest.approx(brute, abs=1e-12), (d, p, brute)
            if obs < 1e-12:  # no effect at all: p is 1 whatever the method
                continue
            # the sampled estimate lands near the exact value
            ps, method = sign_flip_p(d, exact_up_to=0, samples=20_000)
            assert method == "20000 random" and ps == pytest.approx(brute, abs=0.02)
    assert sign_flip_p([0.1, -0.1]) == (1.0, "exact")


def test_paired_comparison_refuses_unpaired():
    with pytest.raises(ValueError, match="equally long"):
        paired_comparison([0.1, 0.2], [0.3])
