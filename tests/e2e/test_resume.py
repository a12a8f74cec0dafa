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
from conftest import collected_dataset, run_cli
from test_cli import QUICKSTART

SMALL = [
    "--config", str(QUICKSTART),
    "--data.updates_per_epoch", "40",
    "--mopo.rollout_freq", "40",
    "--mopo.rollout_batch_size", "500",
    "--evaluation.num_episodes", "2",
    "--trainer.enable_progress_bar", "false",
]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> tuple[Path, list[str]]:
    """A trained (tiny) dynamics checkpoint shared by every run here, so runs differ only in stage 2."""
    cwd = tmp_path_factory.mktemp("resume")
    data = collected_dataset("hopper", 2_000, seed=0)
    args = [*SMALL, "--data.path", str(data), "--dynamics.max_epochs", "2"]
    run_cli("fit", *args, "--run_name", "dyn", "--stage", "dynamics", cwd=cwd)
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


def _mtime(path: Path) -> float:
    return path.stat().st_mtime_ns if path.exists() else 0.0


def _all_checkpoints_load(run_dir: Path, cache: Path) -> None:
    for path in [*run_dir.rglob("*.ckpt"), *cache.rglob("*.ckpt")]:
        if not path.name.startswith("."):
            torch.load(path, weights_only=True)  # raises on a half-written file


KILLS_STAGE1, KILLS_STAGE2 = 8, 12


@pytest.mark.slow
def test_fault_campaign_20_kills_across_both_stages_then_identical_results(tmp_path):
    """20 SIGKILLs at random moments across both stages, each followed by a resume (the first 8 aim at stage 1).

    Each kill lands a random delay after the run last saved progress (a stage-1 epoch or a SAC epoch),
    so it can hit training, evaluation, a checkpoint write or the link swap. The finished run must equal
    an uninterrupted one bit for bit, leave no unreadable checkpoint, and record every evaluation once.
    """
    data = collected_dataset("hopper", 2_000, seed=0)
    run = [*SMALL, "--data.path", str(data), "--dynamics.max_epochs", "16", "--trainer.max_epochs", "24",
           "--evaluation.num_episodes", "1", "--evaluation.max_episode_steps", "100"]
    run_cli("fit", *run, "--run_name", "straight", "--dynamics_cache", str(tmp_path / "cache_a"), cwd=tmp_path)

    cache = tmp_path / "cache_b"
    cmd = [sys.executable, "-m", "mopo_lightning.commands.cli", "fit", *run, "--run_name", "killed", "--dynamics_cache",
           str(cache)]
    run_dir = tmp_path / "checkpoints" / "killed"
    last = run_dir / "sac" / "last.ckpt"
    rng = random.Random(0)
    kills = {"stage 1": 0, "stage 2": 0}
    for attempt in range(KILLS_STAGE1 + KILLS_STAGE2):
        def progress() -> tuple[float, float]:  # a stage-1 epoch or a SAC epoch saved
            return _mtime(next(cache.glob("*/partial.ckpt"), cache / "none")), _mtime(last)

        seen = progress()
        proc = subprocess.Popen(cmd + (["--ckpt_path", "last"] if attempt else []), cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while progress() == seen and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.6 if attempt < KILLS_STAGE1 else 1.0))
        if proc.poll() is None:
            kills["stage 2" if (run_dir / "dynamics.ckpt").exists() else "stage 1"] += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _all_checkpoints_load(run_dir, cache)
    run_cli(*cmd[3:], "--ckpt_path", "last", cwd=tmp_path)
    print(f"kills landed: {kills}")
    assert sum(kills.values()) == KILLS_STAGE1 + KILLS_STAGE2 and kills["stage 1"] >= 4, kills

    returns_a, weights_a = _final(tmp_path, "straight")
    returns_b, weights_b = _final(tmp_path, "killed")
    assert returns_a == returns_b
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
    dyn_a = torch.load(tmp_path / "checkpoints" / "straight" / "dynamics.ckpt", weights_only=True)["state_dict"]
    dyn_b = torch.load(run_dir / "dynamics.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(dyn_a[k], dyn_b[k]) for k in dyn_a)
    results = json.loads((run_dir / "results.json").read_text())
    assert [e["sac_updates"] for e in results["evaluations"]] == [40 * (i + 1) for i in range(24)]
    _all_checkpoints_load(run_dir, cache)
    leftovers = [p.name for p in run_dir.rglob(".*") if p.is_file()]
    assert all(name.endswith(".tmp") for name in leftovers), leftovers


def test_atomic_save_survives_a_kill_mid_write(tmp_path):
    """SIGKILL while a large checkpoint is being written: the previous file must still load."""
    target = tmp_path / "ckpt.ckpt"
    script = (
        "import torch, sys\n"
        "from mopo_lightning.callbacks.checkpointing import AtomicCheckpointIO\n"
        "io = AtomicCheckpointIO()\n"
        "io.save_checkpoint({'step': torch.tensor(1)}, sys.argv[1])\n"
        "print('ready', flush=True)\n"
        "io.save_checkpoint({'step': torch.tensor(2), 'big': torch.ones(400_000_000, dtype=torch.uint8)},"
        " sys.argv[1])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        tmp = next(tmp_path.glob(".ckpt.ckpt.*.tmp"), None)  # files.atomic_path's temporary name
        if tmp is not None and tmp.exists() and tmp.stat().st_size > 0:
            break
        time.sleep(0.001)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert torch.load(target, weights_only=True)["step"].item() == 1
