"""Few-seed statistics as Agarwal et al. 2021 recommend ("Deep RL at the Edge of the Statistical Precipice",
NeurIPS; reference code: the ``rliable`` package, used here rather than re-implemented).

- point estimates: the mean and the interquartile mean (IQM: mean of the middle 50% of runs, pooled over
  tasks; ``scipy.stats.trim_mean(..., 0.25)``, so with fewer than 4 runs it equals the mean);
- 95% percentile confidence intervals by the stratified bootstrap (runs resampled within each task;
  ``rliable.library.get_interval_estimates``) with ``reps`` replications (default 2000) and a fixed seed
  set afresh for every estimate, so a report is reproducible (rliable 1.2 draws its bootstrap indices
  from numpy's global RNG whatever ``random_state`` says: that RNG is seeded for the call, then restored);
- the probability of improvement P(X > Y) (Mann-Whitney U / (n_x n_y), averaged over tasks;
  ``rliable.metrics.probability_of_improvement``) with its bootstrap interval.

Score matrices are ``[runs, tasks]`` (rliable's layout); a learning curve adds a last axis of evaluations.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

REPS = 2000
"""Bootstrap replications (rliable's default is 50,000; 2000 keeps a report of a 12-trial grid in seconds)."""
SEED = 0
"""Seed of the bootstrap's RandomState."""
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap confidence interval."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all entries (rliable's ``aggregate_iqm``)."""
    from rliable import metrics

    return float(metrics.aggregate_iqm(np.asarray(scores, dtype=np.float64)))


def _estimates(score_dict: Mapping[str, object], func: Callable[..., np.ndarray], reps: int,
               seed: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    import warnings

    from rliable import library as rly

    # rliable 1.2's StratifiedBootstrap draws its indices from numpy's global RNG (np.random.choice) and
    # ignores random_state: seed the global RNG for the call and put the caller's state back afterwards.
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with warnings.catch_warnings():  # arch deprecates the RandomState that rliable 1.2 passes it
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            return rly.get_interval_estimates(dict(score_dict), func, reps=reps,
                                              confidence_interval_size=CONFIDENCE,
                                              random_state=np.random.RandomState(seed))
    finally:
        np.random.set_state(state)


def mean_and_iqm(scores: np.ndarray, reps: int = REPS, seed: int = SEED) -> dict[str, Interval]:
    """Mean and IQM of a ``[runs, tasks]`` matrix, each with its stratified-bootstrap 95% interval."""
    from rliable import metrics

    scores = np.asarray(scores, dtype=np.float64)
    assert scores.ndim == 2 and scores.shape[0] >= 1, scores.shape  # [runs, tasks]
    func = lambda x: np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)])
    points, intervals = _estimates({"x": scores}, func, reps, seed)
    (mean, iqm_), (low, high) = points["x"], intervals["x"]
    return {"mean": Interval(float(mean), float(low[0]), float(high[0])),
            "iqm": Interval(float(iqm_), float(low[1]), float(high[1]))}


def curve(scores: np.ndarray, reps: int = REPS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve of ``[runs, tasks, evaluations]`` scores and its pointwise 95% interval."""
    scores = np.asarray(scores, dtype=np.float64)
    assert scores.ndim == 3, scores.shape  # [runs, tasks, evaluations]
    points, intervals = _estimates({"x": scores}, lambda x: x.mean(axis=(0, 1)), reps, seed)
    return points["x"], intervals["x"][0], intervals["x"][1]


def probability_of_improvement(x: np.ndarray, y: np.ndarray, reps: int = REPS, seed: int = SEED) -> Interval:
    """P(X > Y) for ``[runs, tasks]`` matrices over the same tasks (runs may differ), with its interval."""
    from rliable import metrics

    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    assert x.ndim == y.ndim == 2 and x.shape[1] == y.shape[1], (x.shape, y.shape)  # [runs, tasks]
    points, intervals = _estimates({"xy": [x, y]}, metrics.probability_of_improvement, reps, seed)
    low, high = np.ravel(intervals["xy"])
    return Interval(float(np.ravel(points["xy"])[0]), float(low), float(high))
