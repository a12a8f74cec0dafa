"""Exact resume and crash safety of ``mopo-lightning fit``, in subprocesses, on real MuJoCo data."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import collected_dataset

from conftest import run_cli
from test_cli import QUICKSTART

SMALL = [
    "--config", str(QUICKSTART),
    "--data.updates_per_epoch", "40",
    "--data.rollout_freq", "40",
    "--data.rollout_batch_size", "500",
    "--evaluation.num_episodes", "2",
    "--trainer.enable_progress_bar", "false",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> tuple[Path, list[str]]:
    """A trained (tiny) dynamics checkpoint shared by every run here, so runs differ only in stage 2."""
    cwd = tmp_path_factory.mktemp("resume")
    data = collected_dataset("hopper", 2_000, seed=0)
    args = [*SMALL, "--data.path", str(data)]
    run_cli("fit", *args, "--run_name", "dyn", "--stage", "dynamics", "--dynamics.max_epochs", "2", cwd=cwd)
    return cwd, [*args, "--dynamics_checkpoint", str(cwd / "checkpoints" / "dyn" / "dynamics.ckpt")]


def _final(cwd: Path, run: str) -> tuple[list[float], dict[str, torch.Tensor]]:
    results = json.loads((cwd / "checkpoints" / run / "results.json").read_text())
    ckpt = torch.load(cwd / "checkpoints" / run / "sac" / "last.ckpt", weights_only=True)
    return [e["return_mean"] for e in results["evaluations"]], ckpt["state_dict"]


def test_resumed_run_is_bit_identical(workdir):
    cwd, args = workdir
    run_cli("fit", *args, "--run_name", "straight", "--trainer.max_epochs", "4", cwd=cwd)
    run_cli("fit", *args, "--run_name", "resumed", "--trainer.max_epochs", "2", cwd=cwd)
    run_cli("fit", *args, "--run_name", "resumed", "--trainer.max_epochs", "4", "--ckpt_path", "last", cwd=cwd)
    returns_a, weights_a = _final(cwd, "straight")
    returns_b, weights_b = _final(cwd, "resumed")
    assert len(returns_a) == 4
    assert returns_a == returns_b
    assert int(weights_b["sac_updates"]) == 160
    for key in weights_a:  # actor, critics, targets, alpha and the counter
        assert torch.equal(weights_a[key], weights_b[key]), key
    # One TensorBoard run directory, continued rather than versioned anew.
    assert [p.name for p in (cwd / "checkpoints" / "resumed" / "tensorboard").iterdir()] == ["sac"]


def test_kill_at_random_moments_then_resume(workdir):
    cwd, args = workdir
    run = ["fit", *args, "--run_name", "killed", "--trainer.max_epochs", "12", "--data.rollout_batch_size", "4000"]
    last = cwd / "checkpoints" / "killed" / "sac" / "last.ckpt"
    rng = random.Random(0)
    for attempt in range(3):
        cmd = [sys.executable, "-m", "mopo_lightning.cli", *run] + (["--ckpt_path", "last"] if attempt else [])
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while not last.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        before = torch.load(last, weights_only=True)["state_dict"]["sac_updates"].item()
        time.sleep(rng.uniform(0.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # Whatever the moment, last.ckpt resolves to a complete checkpoint at least as new as before.
        state = torch.load(last, weights_only=True)
        assert state["state_dict"]["sac_updates"].item() >= before
        assert "model_buffer" in state["D4RLDataModule"] and "RNGStates" in state["callbacks"]
    run_cli(*run, "--ckpt_path", "last", cwd=cwd)
    results = json.loads((cwd / "checkpoints" / "killed" / "results.json").read_text())
    assert [e["sac_updates"] for e in results["evaluations"]] == [40 * (i + 1) for i in range(12)]
    leftovers = [p.name for p in last.parent.iterdir() if p.name.startswith(".")]
    assert all(name.endswith(".tmp") for name in leftovers)


def test_atomic_save_survives_a_kill_mid_write(tmp_path):
    """SIGKILL while a large checkpoint is being written: the previous file must still load."""
    target = tmp_path / "ckpt.ckpt"
    script = (
        "import torch, sys\n"
        "from mopo_lightning.callbacks.checkpointing import AtomicCheckpointIO\n"
        "io = AtomicCheckpointIO()\n"
        "io.save_checkpoint({'step': torch.tensor(1)}, sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "io.save_checkpoint({'step': torch.tensor(2), 'big': torch.ones(400_000_000, dtype=torch.uint8)}, sys.argv[1])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    tmp = tmp_path / ".ckpt.ckpt.tmp"
    deadline = time.monotonic() + 60
    while not (tmp.exists() and tmp.stat().st_size > 0) and time.monotonic() < deadline:
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert torch.load(target, weights_only=True)["step"].item() == 1
