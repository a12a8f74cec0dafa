"""ModelRollouts' checkpoint state: FIFO position and sampling continue exactly after a restore.

The model buffer is the project's own preallocated ring (``model_env.buffer.ModelBuffer``); its checkpoint
state keeps the format of the TorchRL buffer it replaced (filled rows as plain tensors, the writer's cursor),
so older checkpoints load under ``weights_only=True``.
"""

from __future__ import annotations

import torch

from mopo_lightning.envs import termination
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.rollouts import ModelRollouts, RolloutSchedule
from mopo_lightning.transitions import transitions

MDP = ModelMDP(termination.never, 1.0, rollout_length=1)
SCHEDULE = RolloutSchedule(rollout_batch_size=5, rollout_freq=10, model_retain_epochs=2)


def _rollouts(seed: int = 0) -> ModelRollouts:
    return ModelRollouts(torch.zeros(4, 3), 2, MDP, SCHEDULE, sample_size=4,
                         generator=torch.Generator().manual_seed(seed))


def _rows(start: int, n: int):
    obs = torch.arange(start, start + n, dtype=torch.float32)[:, None].expand(n, 3).clone()
    return transitions(obs, torch.zeros(n, 2), obs + 1, torch.zeros(n), torch.zeros(n, dtype=torch.bool))


def test_state_after_wraparound_restores_order_and_sampling():
    a = _rollouts()
    assert a.capacity == 10
    a.buffer.extend(_rows(0, 13))  # wraps: rows 10..12 overwrite positions 0..2, the writer sits at 3
    assert a.buffer.cursor == 3
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
    small = ModelRollouts(torch.zeros(4, 3), 2, MDP, SCHEDULE, sample_size=4, generator=torch.Generator(), rank=1,
                          world_size=2)
    assert small.capacity == 4
    small.load_state_dict(a.state_dict())
    assert sorted(small.buffer[:]["observation"][:, 0].tolist()) == [9.0, 10.0, 11.0, 12.0]


def test_buffer_matches_the_torchrl_buffer_it_replaced():
    """Same rows after wrapping, same cursor, same checkpoint tensors and the same draws for one seed."""
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

    ours = _rollouts(seed=3)
    theirs = TensorDictReplayBuffer(storage=LazyTensorStorage(ours.capacity), batch_size=4,
                                    generator=torch.Generator().manual_seed(3))
    for start, n in ((0, 4), (4, 5), (9, 3), (12, 10)):  # the last one fills the whole ring again
        ours.buffer.extend(_rows(start, n))
        theirs.extend(_rows(start, n))
        assert ours.buffer.cursor == theirs.writer.state_dict()["_cursor"]
        assert torch.equal(ours.buffer[:]["observation"], theirs.storage[: len(theirs)]["observation"])
    assert torch.equal(ours.sample()["observation"], theirs.sample()["observation"])


def test_checkpoint_state_loads_with_weights_only(tmp_path):
    a = _rollouts()
    a.buffer.extend(_rows(0, 7))
    torch.save(a.state_dict(), tmp_path / "state.pt")
    b = _rollouts()
    b.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert len(b) == 7 and b.buffer.cursor == 7
    assert torch.equal(b.buffer[:]["next", "terminated"], a.buffer[:]["next", "terminated"])


def test_checkpoint_state_holds_only_the_filled_rows():
    """``torch.save`` writes a view's whole storage: the state must not carry the empty part of the ring."""
    import io

    a = _rollouts()
    a.buffer.extend(_rows(0, 3))  # 3 of 10 rows filled
    state = a.state_dict()
    rows = state["model_buffer"]["observation"]
    assert rows.shape[0] == 3
    assert rows.untyped_storage().nbytes() == rows.numel() * rows.element_size()
    saved, full = io.BytesIO(), io.BytesIO()
    torch.save(state, saved)
    a.buffer.extend(_rows(3, 7))
    torch.save(a.state_dict(), full)
    assert saved.tell() < full.tell()


def test_a_full_ring_goes_to_the_checkpoint_without_a_copy():
    """Once the ring is full its views are its whole storage: no clone (the background writer copies anyway)."""
    a = _rollouts()
    a.buffer.extend(_rows(0, 13))  # 10 of 10 rows, wrapped
    rows = a.state_dict()["model_buffer"]["observation"]
    assert rows.shape[0] == a.capacity == 10
    assert rows.data_ptr() == a.buffer.leaves[0].data_ptr()  # the ring itself
    b = _rollouts()
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.buffer[:]["observation"], a.buffer[:]["observation"]) and b.buffer.cursor == 3
