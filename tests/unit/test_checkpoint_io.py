"""AtomicCheckpointIO in the background: a snapshot at save time, written in order, errors never lost."""

from __future__ import annotations

import threading

import lightning as L
import pytest
import torch
from test_sac_trainer import OBS, A, loader

from mopo_lightning.callbacks.checkpointing import AtomicCheckpointIO, EpochCheckpoint
from mopo_lightning.policy.sac import SACModule


def test_background_write_is_a_snapshot_and_work_queued_behind_it_sees_the_file(tmp_path, monkeypatch):
    release, real_save = threading.Event(), torch.save

    def slow_save(obj, f, *args, **kwargs):  # the writer holds until the test has looked
        assert release.wait(30)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", slow_save)
    io, path = AtomicCheckpointIO(background=True), tmp_path / "a.ckpt"
    weights = torch.arange(4.0)
    io.save_checkpoint({"w": weights, "nested": {"views": [weights[:2]]}, "step": 3}, path)  # returns at once
    weights.add_(100.0)  # training goes on, in place
    seen: list[bool] = []
    io.after_writes(lambda: seen.append(path.exists()))
    assert not path.exists() and seen == []  # still being written
    release.set()
    io.wait()
    assert seen == [True]  # queued work ran after the write
    state = torch.load(path, weights_only=True)
    assert torch.equal(state["w"], torch.arange(4.0)) and state["step"] == 3
    view = state["nested"]["views"][0]
    assert torch.equal(view, torch.arange(2.0)) and view.untyped_storage().nbytes() == 2 * 4  # compact copy
    io.teardown()


def test_a_failed_background_write_raises_at_the_next_save_and_at_teardown(tmp_path, monkeypatch):
    def failing_save(obj, f, *args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    io = AtomicCheckpointIO(background=True)
    io.save_checkpoint({"w": torch.zeros(2)}, tmp_path / "a.ckpt")  # fails on the writer thread
    done = threading.Event()
    io.after_writes(done.set)
    assert done.wait(30)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"w": torch.zeros(2)}, tmp_path / "b.ckpt")

    other = AtomicCheckpointIO(background=True)
    other.save_checkpoint({"w": torch.zeros(2)}, tmp_path / "c.ckpt")
    with pytest.raises(OSError, match="No space left"):
        other.teardown()
    io.teardown()
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def _fit(tmp_path, background: bool) -> dict:
    torch.manual_seed(0)
    sac = SACModule(OBS, A, hidden_dim=16)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[EpochCheckpoint(tmp_path, keep=2)], plugins=[AtomicCheckpointIO(background)])
    trainer.fit(sac, train_dataloaders=loader(6))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch0001.ckpt", "epoch0002.ckpt", "last.ckpt"]
    assert (tmp_path / "last.ckpt").resolve().name == "epoch0002.ckpt"
    return torch.load(tmp_path / "last.ckpt", weights_only=True)


def test_epoch_checkpoints_written_in_the_background_equal_the_synchronous_ones(tmp_path):
    """When ``fit`` returns, the background writes are done, linked and pruned as a synchronous run leaves them."""
    sync, background = _fit(tmp_path / "sync", False), _fit(tmp_path / "background", True)
    assert sync["global_step"] == background["global_step"] == 3 * 3 * 6
    for key, value in sync["state_dict"].items():
        assert torch.equal(value, background["state_dict"][key]), key
    for a, b in zip(sync["optimizer_states"], background["optimizer_states"], strict=True):
        for state_a, state_b in zip(a["state"].values(), b["state"].values(), strict=True):
            assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
