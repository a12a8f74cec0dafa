"""Data for the dynamics ensemble: model inputs/targets, holdout split, bootstrap batches.

Source: MBPO's ``BNN.train`` (Janner et al. 2019), used by MOPO (Yu et al. 2020):
- holdout = a random min(int(20% of N), 1000) rows; the rest is the train split;
- each member trains on its own bootstrap resample of the train split (indices drawn once, [E, N_train]),
  whose rows are reshuffled every epoch; one epoch = ceil(N_train / 256) steps, the last one shorter;
- the holdout is scored in one batch.
Batches are ready-made [E, B, ...] tensors gathered from the whole split held in memory, so an epoch costs
no per-sample Python work and no DataLoader workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset

from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD


def model_data(td: TensorDictBase) -> tuple[Tensor, Tensor]:
    """Transitions [N] -> (inputs [N, O + A] = [s, a], targets [N, 1 + O] = [r, s' - s]), float32."""
    obs = td[OBSERVATION].float()
    inputs = torch.cat([obs, td[ACTION].float()], dim=-1)
    reward = td[REWARD].float().reshape(obs.shape[0], 1)
    targets = torch.cat([reward, td[NEXT_OBSERVATION].float() - obs], dim=-1)
    return inputs, targets


def holdout_split(
    n: int, holdout_ratio: float = 0.2, max_holdout: int = 1000, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Random (train_idx, holdout_idx) with min(int(n * ratio), max_holdout) holdout rows."""
    num_holdout = min(int(n * holdout_ratio), max_holdout)
    perm = torch.randperm(n, generator=generator)
    return perm[num_holdout:], perm[:num_holdout]


class BootstrapBatches(IterableDataset):
    """Yields (inputs [E, B, in], targets [E, B, out]); member e reads its own bootstrap resample.

    The resample indices [E, N] are drawn once from ``seed``; epoch k reshuffles them with a generator
    seeded from (seed, k), so a run is reproducible. Use with ``DataLoader(..., batch_size=None)``.
    """

    def __init__(
        self, inputs: Tensor, targets: Tensor, num_members: int, batch_size: int = 256, seed: int = 0
    ) -> None:
        assert inputs.shape[0] == targets.shape[0] > 0, (inputs.shape, targets.shape)
        self.inputs, self.targets = inputs, targets  # [N, in], [N, out]: the train split
        self.num_members, self.batch_size, self.seed = num_members, batch_size, seed
        n = inputs.shape[0]
        g = torch.Generator().manual_seed(seed)
        self.bootstrap = torch.randint(n, (num_members, n), generator=g)  # [E, N]
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(self.inputs.shape[0] / self.batch_size)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        self.epoch += 1
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.argsort(torch.rand(self.bootstrap.shape, generator=g), dim=1)
        idx = self.bootstrap.gather(1, order)  # [E, N], each row a reshuffled resample
        e = self.num_members
        for start in range(0, idx.shape[1], self.batch_size):
            rows = idx[:, start : start + self.batch_size].reshape(-1)  # [E * B], member-major
            # index_select of flat rows: the same values as inputs[rows [E, B]], ~2x faster on CPU
            yield (self.inputs.index_select(0, rows).view(e, -1, self.inputs.shape[-1]),
                   self.targets.index_select(0, rows).view(e, -1, self.targets.shape[-1]))


class _SingleBatch(IterableDataset):
    """The whole holdout as one batch: (inputs [H, in], targets [H, out])."""

    def __init__(self, inputs: Tensor, targets: Tensor) -> None:
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        yield self.inputs, self.targets


@dataclass
class DynamicsData:
    """What ``trainer.fit`` needs, plus the raw splits (for normaliser fitting and evaluation)."""

    train: DataLoader
    holdout: DataLoader
    train_inputs: Tensor  # [N_train, in]
    train_targets: Tensor  # [N_train, out]
    holdout_inputs: Tensor  # [H, in]
    holdout_targets: Tensor  # [H, out]


def dynamics_dataloaders(
    td: TensorDictBase,
    num_members: int = 7,
    batch_size: int = 256,
    holdout_ratio: float = 0.2,
    max_holdout: int = 1000,
    seed: int = 0,
) -> DynamicsData:
    """Split a transition TensorDict [N] and build the bootstrap train loader and the holdout loader."""
    inputs, targets = model_data(td)
    train_idx, holdout_idx = holdout_split(
        inputs.shape[0], holdout_ratio, max_holdout, torch.Generator().manual_seed(seed)
    )
    if holdout_idx.numel() == 0:
        raise ValueError(f"no holdout rows from {inputs.shape[0]} transitions: early stopping needs some")
    tr_x, tr_y = inputs[train_idx].contiguous(), targets[train_idx].contiguous()
    ho_x, ho_y = inputs[holdout_idx].contiguous(), targets[holdout_idx].contiguous()
    train = DataLoader(BootstrapBatches(tr_x, tr_y, num_members, batch_size, seed=seed + 1), batch_size=None)
    holdout = DataLoader(_SingleBatch(ho_x, ho_y), batch_size=None)
    return DynamicsData(train, holdout, tr_x, tr_y, ho_x, ho_y)
