"""Per-phase torch thread counts: the rollout runs under its own count, and the previous count comes back."""

from __future__ import annotations

import torch

from mopo_lightning.machine import torch_threads
from mopo_lightning.model_env.rollouts import RolloutStats
from mopo_lightning.training.mixed_batches import MixedBatches


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


class _Rollouts:
    def __init__(self) -> None:
        self.seen: list[int] = []

    def due(self, updates: int) -> bool:
        return updates % 2 == 0

    def rollout(self, policy, updates, device) -> RolloutStats:
        self.seen.append(torch.get_num_threads())
        return RolloutStats({})


class _Learner:
    sac_updates = torch.tensor(0)
    device = torch.device("cpu")

    def policy_module(self):
        return None

    def check_finite(self) -> None:
        pass


def test_rollouts_run_under_their_thread_count():
    before = torch.get_num_threads()
    rollouts = _Rollouts()
    batches = MixedBatches(rollouts, lambda: torch.get_num_threads(), _Learner(), length=4,
                           rollout_threads=before + 1)
    sampled = list(batches)
    assert rollouts.seen == [before + 1, before + 1]  # updates 0 and 2
    assert sampled == [before] * 4  # batches and updates keep the SAC count
