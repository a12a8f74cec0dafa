"""DOPE metrics (mopo_lightning/selection/metrics.py): hand-computed values, scipy's Spearman, edge cases."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from mopo_lightning.selection.metrics import (
    average_ranks,
    group_metrics,
    mean_absolute_error,
    regret_at_k,
    selection_metrics,
    spearman,
)


def test_average_ranks_share_ties():
    # sorted: 1 (position 1), 3, 3 (positions 2 and 3 -> both 2.5)
    assert average_ranks([3, 1, 3]).tolist() == [2.5, 1.0, 2.5]
    # 5 5 5 take positions 1..3 -> 2 each; 7 -> 4
    assert average_ranks([5, 7, 5, 5]).tolist() == [2.0, 4.0, 2.0, 2.0]


def test_spearman_by_hand():
    # no ties: ranks are the values; d = [0, -1, 1, 0], sum d^2 = 2; rho = 1 - 6 * 2 / (4 * (16 - 1)) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties: ranks est [1.5, 1.5, 3], true [1, 2, 3]; centred [-.5, -.5, 1] and [-1, 0, 1];
    # sum of products 0.5 + 0 + 1 = 1.5; sums of squares 1.5 and 2; rho = 1.5 / sqrt(3) = 0.8660
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / np.sqrt(3.0))
    assert spearman([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(3, 30))
        est = rng.integers(0, 5, n).astype(float)  # few values: many ties
        true = rng.integers(0, 5, n) + rng.normal(0, 1, n).round(0)
        ours = spearman(est, true)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on a constant side before returning NaN
            theirs = stats.spearmanr(est, true).statistic
        if np.isnan(theirs):
            assert ours is None  # a constant side: scipy says NaN, we say undefined
        else:
            assert ours == pytest.approx(theirs, abs=1e-12)


def test_spearman_undefined():
    assert spearman([1.0], [2.0]) is None  # fewer than 2 candidates
    assert spearman([], []) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None  # constant estimate: no ranking


def test_regret_zero_when_best_ranked_first_and_one_when_worst_of_two_picked():
    assert regret_at_k([3.0, 2.0, 1.0], [30.0, 10.0, 20.0], k=1) == 0.0
    # two candidates, the estimate prefers the worse: (max - worst) / (max - min) = 1
    assert regret_at_k([1.0, 0.0], [0.0, 5.0], k=1) == 1.0


def test_regret_by_hand():
    true = [10.0, 50.0, 30.0, 0.0]
    est = [0.9, 0.1, 0.8, 0.2]  # order by estimate: 0, 2, 3, 1
    # k=1: top {0}, best true 10: (50 - 10) / (50 - 0) = 0.8
    assert regret_at_k(est, true, 1) == pytest.approx(0.8)
    # k=2: top {0, 2}, best true 30: (50 - 30) / 50 = 0.4; k=3 adds 3 (true 0): still 0.4
    assert regret_at_k(est, true, 2) == pytest.approx(0.4)
    assert regret_at_k(est, true, 3) == pytest.approx(0.4)
    assert regret_at_k(est, true, 4) is None  # the top 4 holds every candidate: trivially 0, so undefined
    with pytest.raises(ValueError):
        regret_at_k(est, true, 0)


def test_regret_ties_go_against_the_selector_whatever_the_order():
    # equal estimates: the lower true value ranks first, in either input order -> picks true 0: regret 1
    assert regret_at_k([1.0, 1.0], [0.0, 1.0], 1) == 1.0
    assert regret_at_k([1.0, 1.0], [1.0, 0.0], 1) == 1.0
    # a tie below the cut does not matter: top 1 is the unique max estimate (true 4 of range 0..4)
    assert regret_at_k([2.0, 1.0, 1.0], [4.0, 0.0, 3.0], 1) == 0.0
    # every true value equal: any pick is the best
    assert regret_at_k([0.0, 1.0, 2.0], [7.0, 7.0, 7.0], 1) == 0.0


def test_mean_absolute_error_by_hand():
    assert mean_absolute_error([1.0, 2.0], [2.0, 4.0]) == pytest.approx(1.5)  # (1 + 2) / 2
    assert mean_absolute_error([], []) is None
    with pytest.raises(ValueError):
        mean_absolute_error([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        mean_absolute_error([np.nan], [1.0])


def test_group_and_pooled_metrics_are_json_ready():
    groups = {
        # A: est [1, 2, 3], true [10, 30, 20]: rho ranks [1,2,3] vs [1,3,2]: d^2 sum 2, 1 - 12 / 24 = 0.5;
        # regret@1: top is 3 (true 20): (30 - 20) / (30 - 10) = 0.5; MAE (9 + 28 + 17) / 3 = 18
        "hopper-medium": ([1.0, 2.0, 3.0], [10.0, 30.0, 20.0]),
        # B: one candidate: rho None, regret@1 None (k >= n); MAE |5 - 3| = 2
        "walker2d-medium": ([5.0], [3.0]),
    }
    out = selection_metrics(groups, ks=(1, 2))
    a, b = out.groups
    assert (a.group, a.n, b.n) == ("hopper-medium", 3, 1)
    assert a.spearman == pytest.approx(0.5) and b.spearman is None
    assert a.regret == {"1": pytest.approx(0.5), "2": pytest.approx(0.0)}
    assert a.mean_absolute_error == pytest.approx(18.0) and b.mean_absolute_error == pytest.approx(2.0)
    assert out.n_groups == 2
    assert (out.spearman.mean, out.spearman.groups) == (pytest.approx(0.5), 1)
    assert (out.regret["1"].mean, out.regret["1"].groups) == (pytest.approx(0.5), 1)
    assert (out.mean_absolute_error.mean, out.mean_absolute_error.groups) == (
        pytest.approx(10.0),
        2,
    )  # (18 + 2) / 2
    as_json = json.loads(json.dumps(out.as_dict()))
    assert as_json["n_groups"] == 2
    assert as_json["groups"][1]["regret"] == {"1": None, "2": None}
    assert group_metrics([1.0, 2.0], [1.0, 2.0]).regret == {"1": 0.0}
