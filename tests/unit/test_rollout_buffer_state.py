"""ModelRollouts' checkpoint state: FIFO position and sampling continue exactly after a restore.

This also guards the one semi-public TorchRL hook the project uses (the writer's ``_cursor`` state):
if TorchRL renames or changes it, these tests fail loudly instead of a resume silently reordering rows.
"""

from __future__ import annotations

import torch

from mopo_lightning.envs import termination
from mopo_lightning.envs.rollout import ModelRollouts
from mopo_lightning.transitions import transitions


def _rollouts(seed: int = 0) -> ModelRollouts:
    return ModelRollouts(torch.zeros(4, 3), termination.never, 2, rollout_length=1, rollout_batch_size=5,
                         rollout_freq=10, model_retain_epochs=2, penalty_coef=1.0, penalty_kind="aleatoric",
                         reward_mode="sample", sample_size=4, generator=torch.Generator().manual_seed(seed))


def _rows(start: int, n: int):
    obs = torch.arange(start, start + n, dtype=torch.float32)[:, None].expand(n, 3).clone()
    return transitions(obs, torch.zeros(n, 2), obs + 1, torch.zeros(n), torch.zeros(n, dtype=torch.bool))


def test_state_after_wraparound_restores_order_and_sampling():
    a = _rollouts()
    assert a.capacity == 10
    a.buffer.extend(_rows(0, 13))  # wraps: rows 10..12 overwrite positions 0..2, the writer sits at 3
    assert a.buffer.writer.state_dict()["_cursor"] == 3
    state = a.state_dict()
    assert int(state["model_buffer_cursor"]) == 3

    b = _rollouts()
    b.load_state_dict(state)
    assert torch.equal(b.buffer[:]["observation"], a.buffer[:]["observation"])
    for r in (a, b):
        r.buffer.extend(_rows(100, 2))  # FIFO: positions 3 and 4 (the oldest rows) are replaced next
    assert torch.equal(b.buffer[:]["observation"], a.buffer[:]["observation"])
    assert a.buffer[:]["observation"][3:5, 0].tolist() == [100.0, 101.0]
    a.generator.manual_seed(7)
    b.generator.manual_seed(7)
    assert torch.equal(a.sample()["observation"], b.sample()["observation"])


def test_smaller_capacity_keeps_the_newest_rows():
    a = _rollouts()
    a.buffer.extend(_rows(0, 13))
    small = ModelRollouts(torch.zeros(4, 3), termination.never, 2, rollout_length=1, rollout_batch_size=5,
                          rollout_freq=10, model_retain_epochs=2, penalty_coef=1.0, penalty_kind="aleatoric",
                          reward_mode="sample", sample_size=4, generator=torch.Generator(), rank=1,
                          world_size=2)
    assert small.capacity == 4
    small.load_state_dict(a.state_dict())
    assert sorted(small.buffer[:]["observation"][:, 0].tolist()) == [9.0, 10.0, 11.0, 12.0]
