"""AtomicCheckpointIO's background writes: a snapshot at save time, written off the training thread, in order."""

from __future__ import annotations

import threading

import pytest
import torch

from mopo_lightning.callbacks.checkpointing import AtomicCheckpointIO, point_link


def test_background_save_is_a_snapshot_written_by_the_writer_thread(tmp_path):
    io, weights, seen = AtomicCheckpointIO(), torch.zeros(1000), {}
    path = tmp_path / "epoch0000.ckpt"

    def then() -> None:
        seen["thread"] = threading.current_thread().name
        seen["complete"] = path.exists()

    with io.in_background(then=then):
        io.save_checkpoint({"w": weights}, path)
    weights.add_(1.0)  # training goes on changing the tensors while the file is written
    io.teardown()
    assert seen == {"thread": seen["thread"], "complete": True}
    assert seen["thread"].startswith("checkpoint-writer")
    assert torch.equal(torch.load(path)["w"], torch.zeros(1000))


def test_a_plain_save_waits_for_the_background_one(tmp_path):
    """The link follows the order of the saves: the later, synchronous save is the one ``last`` names."""
    io, last = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    epoch, interrupted = tmp_path / "epoch0003.ckpt", tmp_path / "interrupted.ckpt"
    with io.in_background(then=lambda: point_link(epoch, last)):
        io.save_checkpoint({"w": torch.randn(200_000)}, epoch)
    io.save_checkpoint({"w": torch.ones(3)}, interrupted)
    point_link(interrupted, last)
    io.teardown()
    assert last.resolve() == interrupted.resolve()
    assert torch.equal(torch.load(last)["w"], torch.ones(3))


def test_a_failed_background_write_is_raised_at_the_next_wait(tmp_path):
    io = AtomicCheckpointIO()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with io.in_background():
        io.save_checkpoint({"w": torch.zeros(3)}, blocker / "epoch0000.ckpt")  # parent is a file
    with pytest.raises(OSError):
        io.teardown()
    io.save_checkpoint({"w": torch.zeros(3)}, tmp_path / "after.ckpt")  # the error is reported once
    assert (tmp_path / "after.ckpt").exists()
