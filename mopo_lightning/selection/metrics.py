"""How well offline estimates pick among candidates: the DOPE metrics.

Source: Fu et al. 2021, "Benchmarks for Deep Off-Policy Evaluation" (ICLR; reference code
google-research/deep_ope), section "Metrics": absolute error, rank correlation and regret@k of estimated against
true policy values, each computed per task and then averaged over tasks. D4RL's ``d4rl/ope.py`` has the same three
for its fixed policy set, with Spearman's closed form 1 - 6 sum d^2 / (n (n^2 - 1)), exact only without ties.

- ``spearman``: Spearman's rho with average ranks for ties (as ``scipy.stats.spearmanr``, which is only a dev
  dependency, so it is written here in numpy and checked against scipy in the tests). Undefined (None) with fewer
  than 2 candidates, or when the estimates or the true values are all equal (a rank of constants has no spread;
  scipy returns NaN there).
- ``regret_at_k``: (max true - max true among the top k by estimate) / (max true - min true). DOPE normalises regret
  by the range of the true values in the task, so 0 is "the top k holds the best" and 1 is "the top k holds only
  the worst". Ties in the estimate at the cut are broken AGAINST the selector: among equal estimates the one with
  the lower true value ranks first (then input order, stable). So the result does not depend on the input order,
  and a constant estimate, which cannot rank, earns the worst regret rather than the luck of the order.
  Defined for 1 <= k < n: with k >= n the top k holds every candidate and the regret is trivially 0, which would
  flatter a pooled mean, so it is None. All true values equal: every pick is the best, regret 0.
- ``mean_absolute_error``: mean |estimate - true| in the units given (pass D4RL-normalised scores to compare tasks).

Pooled over groups (datasets or tasks), as DOPE aggregates: the unweighted mean of the per-group values, over the
groups where the metric is defined; each pooled value carries that number of groups, and every group its n.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def _pair(estimates: ArrayLike, truths: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    est, true = np.asarray(estimates, dtype=np.float64).ravel(), np.asarray(truths, dtype=np.float64).ravel()
    if est.shape != true.shape:
        raise ValueError(f"{est.size} estimates for {true.size} true values: one each per candidate")
    if not (np.isfinite(est).all() and np.isfinite(true).all()):
        raise ValueError("non-finite estimate or true value: drop the candidate or fix its score first")
    return est, true


def average_ranks(values: ArrayLike) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their positions ([3, 1, 3] -> [2.5, 1, 2.5]): [N] -> [N] float64."""
    x = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]  # [N] where a block of equal values starts
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], x.size]  # block b holds sorted positions starts[b] .. ends[b] - 1
    block_rank = (starts + 1 + ends) / 2.0  # mean of the 1-based positions starts + 1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = block_rank[np.cumsum(first) - 1]
    return ranks


def spearman(estimates: ArrayLike, truths: ArrayLike) -> float | None:
    """Spearman's rho (Pearson correlation of average ranks); None when undefined (n < 2 or a constant side)."""
    est, true = _pair(estimates, truths)
    if est.size < 2:
        return None
    re, rt = average_ranks(est), average_ranks(true)
    re, rt = re - re.mean(), rt - rt.mean()
    denom = np.sqrt((re**2).sum() * (rt**2).sum())
    return None if denom == 0 else float((re * rt).sum() / denom)


def regret_at_k(estimates: ArrayLike, truths: ArrayLike, k: int = 1) -> float | None:
    """DOPE's normalised regret@k in [0, 1]; ties in the estimate ranked against the selector (module doc)."""
    if k < 1:
        raise ValueError(f"regret@k needs k >= 1, got {k}")
    est, true = _pair(estimates, truths)
    if k >= est.size:
        return None
    span = true.max() - true.min()
    if span == 0:
        return 0.0
    # np.lexsort sorts by the last key first: estimate descending, then true value ascending (pessimistic ties).
    top = np.lexsort((true, -est))[:k]
    return float((true.max() - true[top].max()) / span)


def mean_absolute_error(estimates: ArrayLike, truths: ArrayLike) -> float | None:
    """Mean |estimate - true| over the candidates; None for none."""
    est, true = _pair(estimates, truths)
    return float(np.abs(est - true).mean()) if est.size else None


@dataclass(frozen=True)
class GroupMetrics:
    """One group's (dataset's) metrics over its ``n`` candidates; None where undefined (module doc)."""

    group: str
    """The group's name (a dataset or task)."""
    n: int
    """Candidates in the group."""
    spearman: float | None
    """Spearman's rho of estimates against true values."""
    regret: dict[str, float | None]
    """Normalised regret@k, keyed by str(k)."""
    mean_absolute_error: float | None
    """Mean |estimate - true|, in the units given."""


@dataclass(frozen=True)
class Pooled:
    """One metric pooled over groups: the unweighted mean of the groups where it is defined."""

    mean: float | None
    """Mean over the ``groups`` groups that define the metric; None if none does."""
    groups: int
    """Groups that entered the mean."""


@dataclass(frozen=True)
class SelectionMetrics:
    """Per-group metrics and their pooled means; ``as_dict()`` is JSON-ready."""

    groups: tuple[GroupMetrics, ...]
    """Every group, in the order given."""
    spearman: Pooled
    """Pooled Spearman's rho."""
    regret: dict[str, Pooled]
    """Pooled normalised regret@k, keyed by str(k)."""
    mean_absolute_error: Pooled
    """Pooled mean absolute error."""

    @property
    def n_groups(self) -> int:
        """Groups given (each pooled value says how many of them define it)."""
        return len(self.groups)

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts, lists, numbers and None (json.dumps-ready), with ``n_groups``."""
        return {"n_groups": self.n_groups, **dataclasses.asdict(self)}


def group_metrics(
    estimates: ArrayLike, truths: ArrayLike, ks: Sequence[int] = (1,), group: str = ""
) -> GroupMetrics:
    """The three DOPE metrics of one group's candidates (``estimates[i]`` and ``truths[i]`` are candidate i's)."""
    est, true = _pair(estimates, truths)
    return GroupMetrics(
        group=group,
        n=int(est.size),
        spearman=spearman(est, true),
        regret={str(k): regret_at_k(est, true, k) for k in ks},
        mean_absolute_error=mean_absolute_error(est, true),
    )


def _pool(values: Sequence[float | None]) -> Pooled:
    defined = [v for v in values if v is not None]
    return Pooled(mean=float(np.mean(defined)) if defined else None, groups=len(defined))


def selection_metrics(
    groups: Mapping[str, tuple[ArrayLike, ArrayLike]], ks: Sequence[int] = (1,)
) -> SelectionMetrics:
    """DOPE metrics per group ({name: (estimates, true values)}) and pooled as DOPE does (per-group mean).

    ``ks``: the k of regret@k; DOPE's summary figures use k = 1.
    """
    per_group = tuple(group_metrics(est, true, ks, name) for name, (est, true) in groups.items())
    return SelectionMetrics(
        groups=per_group,
        spearman=_pool([g.spearman for g in per_group]),
        regret={str(k): _pool([g.regret[str(k)] for g in per_group]) for k in ks},
        mean_absolute_error=_pool([g.mean_absolute_error for g in per_group]),
    )
