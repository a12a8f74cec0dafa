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
Tasks with unequal numbers of runs (a ragged list of per-task columns) are bootstrapped the same way,
stratified by task, with rliable's own metrics: the mean of the per-task means, the IQM of all runs pooled,
and the per-task probability of improvement averaged over tasks; each equals rliable's on equal columns.
Weights on unequal tasks: the mean and P(X > Y) weigh every task equally; the IQM weighs every run equally,
so a task with more runs weighs more in it. Kept so because the IQM is rliable's statistic of pooled runs
(its trimming is over runs; a per-task weighting has no reference implementation to check it against); the
report says so beside the table, with each task's runs.

Small samples (``MIN_RUNS``, counted PER TASK): the bootstrap is stratified by task, so each task's runs are
resampled among themselves; with fewer than 5 runs in a task the percentile bootstrap's "95%" interval is
nearly the range of what those runs allow, and it covers far less than 95% (with 3 runs, the median lies
outside the range of the sample with probability 1/4). 6 tasks of 1 run each are 6 runs, but no task's
spread is measured at all. Such intervals are therefore shown as what they are: the ``range`` of the runs
(``Interval.kind``), never labelled 95%, whenever any task has fewer than 5 runs. A probability of
improvement with fewer than 5 runs of X or of Y in any task gets no interval (``kind`` ``none``). Agarwal et
al. 2021 report 5 or more runs per task.
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
MIN_RUNS = 5
"""Fewest runs PER TASK for which a bootstrap interval is shown as a 95% interval (see the module docstring)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval: a 95% bootstrap interval (``bootstrap``), the range of fewer than
    ``MIN_RUNS`` runs (``range``), or none (``none``: low and high repeat the value)."""

    value: float
    low: float
    high: float
    kind: str = "bootstrap"

    def as_dict(self) -> dict[str, float | str]:
        return {"value": self.value, "low": self.low, "high": self.high, "kind": self.kind}


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
    def func(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)])

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


def _ragged(columns: list[np.ndarray], statistic: Callable[[list[np.ndarray]], np.ndarray], reps: int,
            seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and percentile interval of ``statistic`` under a bootstrap stratified by column."""
    rng = np.random.RandomState(seed)
    point = np.asarray(statistic(columns), dtype=np.float64)
    samples = np.array([statistic([c[rng.randint(len(c), size=len(c))] for c in columns]) for _ in range(reps)])
    tail = 100 * (1 - CONFIDENCE) / 2
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return point, np.atleast_1d(low), np.atleast_1d(high)


def aggregate(columns: list[np.ndarray], reps: int = REPS, seed: int = SEED) -> dict[str, Interval]:
    """Mean and IQM across tasks from each task's own runs (``columns``: one array of run scores per task).

    Equal columns go to rliable (``mean_and_iqm``); unequal ones to the stratified bootstrap above. With fewer
    than ``MIN_RUNS`` runs in any task, the intervals are the range of the runs' scores.
    """
    from rliable import metrics

    columns = [np.asarray(c, dtype=np.float64).reshape(-1) for c in columns]
    pooled = np.concatenate(columns)
    if len({c.size for c in columns}) == 1:
        est = mean_and_iqm(np.stack(columns, axis=1), reps, seed)  # [runs, tasks]
    else:
        def stat(cs: list[np.ndarray]) -> np.ndarray:
            return np.array([np.mean([c.mean() for c in cs]), metrics.aggregate_iqm(np.concatenate(cs))])

        point, low, high = _ragged(columns, stat, reps, seed)
        est = {name: Interval(float(point[i]), float(low[i]), float(high[i])) for i, name in enumerate(("mean", "iqm"))}
    if min(c.size for c in columns) < MIN_RUNS:  # per task: a stratified bootstrap resamples within each
        est = {k: Interval(v.value, float(pooled.min()), float(pooled.max()), "range") for k, v in est.items()}
    return est


def improvement(xs: list[np.ndarray], ys: list[np.ndarray], reps: int = REPS, seed: int = SEED) -> Interval:
    """P(X > Y) over tasks from each task's own runs of X and Y (lists of per-task arrays, same task order).

    Equal columns on each side go to rliable (``probability_of_improvement``); otherwise rliable's per-task
    metric is averaged over tasks under a stratified bootstrap. Fewer than ``MIN_RUNS`` runs of X or of Y in
    any task: no interval (``kind`` ``none``).
    """
    from rliable import metrics

    xs = [np.asarray(c, dtype=np.float64).reshape(-1) for c in xs]
    ys = [np.asarray(c, dtype=np.float64).reshape(-1) for c in ys]
    if len({c.size for c in xs}) == 1 and len({c.size for c in ys}) == 1:
        est = probability_of_improvement(np.stack(xs, axis=1), np.stack(ys, axis=1), reps, seed)
    else:
        tasks = len(xs)

        def stat(cs: list[np.ndarray]) -> np.ndarray:
            return np.array([np.mean([metrics.probability_of_improvement(cs[t][:, None], cs[tasks + t][:, None])
                                      for t in range(tasks)])])

        point, low, high = _ragged([*xs, *ys], stat, reps, seed)
        est = Interval(float(point[0]), float(low[0]), float(high[0]))
    if min(c.size for c in (*xs, *ys)) < MIN_RUNS:  # per task, on each side
        return Interval(est.value, est.value, est.value, "none")
    return est
