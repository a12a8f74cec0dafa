"""Member-wise early stopping of the dynamics ensemble, as a pure, checkpointable rule.

Source: MBPO's ``BNN._save_best`` / ``_set_state`` / ``_end_train`` (Janner et al. 2019), which MOPO
(Yu et al. 2020) trains its model with:
- after every epoch, each member's holdout MSE of the mean is compared with its best so far; the member
  improves when (best - current) / best > 0.01, and then its weights are snapshotted;
- training stops after 6 epochs in a row in which no member improved (the authors' code writes this as
  ``epochs_since_update > 5``);
- at the end every member gets its snapshot back and the elites are the lowest-MSE members.
The logvar bounds are shared by members and are not snapshotted (as in the authors' code).

Everything lives in registered buffers so that Lightning checkpoints carry it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


class MemberwiseEarlyStopping(nn.Module):
    """The stopping rule: ``update(mse [E]) -> (improved [E] bool, should_stop)``.

    The best MSE is kept in float64 so that the 1% threshold is decided exactly as written.
    """

    def __init__(self, num_members: int, improvement_threshold: float = 0.01, patience: int = 6) -> None:
        super().__init__()
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.improvement_threshold = float(improvement_threshold)
        self.patience = int(patience)
        self.register_buffer("best_mse", torch.full((num_members,), float("inf"), dtype=torch.float64))
        self.register_buffer("epochs_since_update", torch.tensor(0, dtype=torch.long))
        self.register_buffer("epochs", torch.tensor(0, dtype=torch.long))  # epochs scored so far

    @torch.no_grad()
    def update(self, mse: Tensor) -> tuple[Tensor, bool]:
        """Score one epoch. mse [E] -> improved [E] (bool), should_stop."""
        assert mse.shape == self.best_mse.shape, (mse.shape, self.best_mse.shape)
        cur = mse.detach().to(device=self.best_mse.device, dtype=torch.float64)
        best = self.best_mse
        first = torch.isinf(best) & torch.isfinite(cur)  # the first finite score always counts
        relative = (best - cur) / best
        improved = first | (torch.isfinite(best) & (relative > self.improvement_threshold))
        self.best_mse.copy_(torch.where(improved, cur, best))
        if bool(improved.any()):
            self.epochs_since_update.zero_()
        else:
            self.epochs_since_update += 1
        self.epochs += 1
        return improved, self.should_stop

    @property
    def should_stop(self) -> bool:
        return int(self.epochs_since_update) >= self.patience

    def elites(self, num_elites: int) -> Tensor:
        """Indices [num_elites] of the members with the lowest best holdout MSE, best first."""
        return torch.argsort(self.best_mse, stable=True)[:num_elites]


class MemberSnapshot(nn.Module):
    """Best weights per member: copies of [E, ...] parameters, kept as buffers."""

    def __init__(self, params: Sequence[Tensor]) -> None:
        super().__init__()
        self.num_tensors = len(params)
        for i, p in enumerate(params):
            self.register_buffer(f"param_{i}", p.detach().clone())

    def _buffers_list(self) -> list[Tensor]:
        return [getattr(self, f"param_{i}") for i in range(self.num_tensors)]

    @torch.no_grad()
    def save(self, params: Sequence[Tensor], members: Tensor) -> None:
        """Copy the members flagged in ``members`` (bool [E]) from ``params`` into the snapshot."""
        assert len(params) == self.num_tensors
        for snap, p in zip(self._buffers_list(), params, strict=True):
            snap[members] = p.detach()[members]

    @torch.no_grad()
    def restore(self, params: Sequence[Tensor]) -> None:
        """Write every member's snapshot back into ``params`` (in place)."""
        assert len(params) == self.num_tensors
        for snap, p in zip(self._buffers_list(), params, strict=True):
            p.copy_(snap)
