"""Holdout split, model inputs/targets and per-member bootstrap batches."""

from __future__ import annotations

import math

import torch
from tensordict import TensorDict

from mopo_lightning.dynamics.batches import BootstrapBatches, dynamics_dataloaders, holdout_split, model_data


def _td(n: int) -> TensorDict:
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(n, 4, generator=g)
    return TensorDict(
        {
            "observation": obs,
            "action": torch.rand(n, 2, generator=g),
            "next": {"observation": obs * 2, "reward": torch.arange(n, dtype=torch.float32)[:, None]},
        },
        [n],
    )


def test_holdout_is_twenty_percent_capped_at_one_thousand():
    for n, expected in [(20_000, 1000), (2_000, 400), (4_999, 999), (7, 1)]:
        train, holdout = holdout_split(n, generator=torch.Generator().manual_seed(0))
        assert holdout.numel() == expected and train.numel() == n - expected
        assert torch.equal(torch.cat([train, holdout]).sort().values, torch.arange(n))


def test_model_data_is_state_action_to_reward_and_delta():
    td = _td(10)
    inputs, targets = model_data(td)
    assert inputs.shape == (10, 6) and targets.shape == (10, 5) and inputs.dtype == torch.float32
    torch.testing.assert_close(inputs, torch.cat([td["observation"], td["action"]], -1))
    torch.testing.assert_close(targets[:, 0], td["next", "reward"][:, 0])
    torch.testing.assert_close(targets[:, 1:], td["observation"])  # s' - s = 2s - s


def test_each_member_reads_its_own_bootstrap_resample_reshuffled_every_epoch():
    n, e, b = 1000, 5, 256
    inputs = torch.arange(n, dtype=torch.float32)[:, None]
    ds = BootstrapBatches(inputs, -inputs, num_members=e, batch_size=b, seed=3)
    assert len(ds) == math.ceil(n / b)
    epochs = []
    for _ in range(2):
        batches = list(ds)
        assert len(batches) == len(ds)
        assert [x.shape for x, _ in batches] == [(e, b, 1)] * 3 + [(e, n - 3 * b, 1)]
        assert all(torch.equal(y, -x) for x, y in batches)  # inputs and targets stay paired
        rows = torch.cat([x[..., 0] for x, _ in batches], dim=1).long()  # [E, N]
        for m in range(e):  # the epoch visits exactly member m's resample
            assert torch.equal(rows[m].sort().values, ds.bootstrap[m].sort().values)
        epochs.append(rows)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled
    assert len({tuple(ds.bootstrap[m].sort().values.tolist()) for m in range(e)}) == e  # members differ
    unique = ds.bootstrap[0].unique().numel() / n
    assert 0.59 < unique < 0.68  # a bootstrap resample holds ~63% distinct rows
    again = BootstrapBatches(inputs, -inputs, num_members=e, batch_size=b, seed=3)
    assert torch.equal(torch.cat([x for x, _ in again], 1), torch.cat([x for x, _ in BootstrapBatches(
        inputs, -inputs, num_members=e, batch_size=b, seed=3)], 1))


def test_dataloaders_split_disjointly_and_yield_the_holdout_in_one_batch():
    td = _td(2000)
    data = dynamics_dataloaders(td, num_members=7, batch_size=256, seed=0)
    assert data.holdout_inputs.shape == (400, 6) and data.train_inputs.shape == (1600, 6)
    holdout = list(data.holdout)
    assert len(holdout) == 1 and torch.equal(holdout[0][0], data.holdout_inputs)
    x, y = next(iter(data.train))
    assert x.shape == (7, 256, 6) and y.shape == (7, 256, 5)
    train_rewards = set(data.train_targets[:, 0].tolist())
    assert train_rewards.isdisjoint(data.holdout_targets[:, 0].tolist())
    assert set(y[..., 0].flatten().tolist()) <= train_rewards
