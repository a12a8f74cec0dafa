"""Online SAC collection on real MuJoCo: kill and resume, D4RL validation, behaviour rewards, learning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_hdf5

from mopo_lightning.collection.online import SACCollectConfig, collect_sac
from mopo_lightning.data.d4rl import load_dataset

REPO = Path(__file__).resolve().parents[2]
# Hopper with 50-step episodes (many checkpoint chances), small networks: a few seconds per run.
RUN = {"task": "hopper", "steps": 3000, "seed": 2, "max_episode_steps": 50}
SAC = {"start_steps": 400, "update_after": 200, "updates_per_step": 1.0, "batch_size": 64, "hidden_dim": 64,
       "checkpoint_every": 300, "log_every_episodes": 1}




@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("online") / "full.hdf5"
    return collect_sac(path=path, quiet=True, sac=SACCollectConfig(**SAC), **RUN)


def cli_config(path: Path, out: Path) -> Path:
    lines = [f"{k}: {v}" for k, v in {**RUN, "path": out, "policy": "sac"}.items()]
    lines += ["sac:"] + [f"  {k}: {v}" for k, v in SAC.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_resume_after_sigkill_gives_the_uninterrupted_file(tmp_path, uninterrupted):
    out = tmp_path / "hopper-sac.hdf5"
    ckpt = tmp_path / "hopper-sac.hdf5.ckpt"
    cmd = [sys.executable, "-m", "mopo_lightning.commands.cli", "collect",
           "--config", str(cli_config(tmp_path / "c.yaml", out))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    # kill once a checkpoint past the warm-up exists (SAC updates and optimiser states in it), mid-run
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["t"] >= 900:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()[-2000:]
    killed_at = torch.load(ckpt, weights_only=True)["t"]
    assert 900 <= killed_at < RUN["steps"] and not out.exists()

    resumed = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert f"resumed from {ckpt} at step " in resumed.stdout
    first = int(resumed.stdout.split(" at step ")[1].split()[0])
    assert first >= killed_at
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "hopper-sac.hdf5"]  # no ckpt, no temp files

    got, want = read_hdf5(out), read_hdf5(uninterrupted)
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    td = load_dataset(out, "hopper")  # the data layer's validation
    assert td.shape == (RUN["steps"],) and td["next", "terminated"].any() and td["next", "truncated"].any()


def test_updates_schedule_and_learning(uninterrupted):
    data = read_hdf5(uninterrupted)
    assert data["metadata/behavior_policy"] == b"sac" and data["metadata/steps"] == RUN["steps"]
    assert data["metadata/sac_updates"] == RUN["steps"] - SAC["update_after"] + 1
    for key in ("infos/x_velocity", "infos/torso_height", "infos/torso_height_at_reset", "infos/qpos"):
        assert data[key].shape[0] == RUN["steps"], key
    # the behaviour policy learns: late episodes score well above the random warm-up
    ends = np.flatnonzero(data["terminals"] | data["timeouts"])
    starts = np.concatenate([[0], ends[:-1] + 1])
    returns = np.add.reduceat(data["rewards"].astype(np.float64), starts)
    random_eps = returns[ends < SAC["start_steps"]]
    late = returns[-8:]
    assert late.mean() > 2.0 * random_eps.mean(), (random_eps.mean(), late.mean())
    # warm-up actions are uniform in the box; SAC's are tanh-squashed (also in [-1, 1])
    assert np.abs(data["actions"]).max() <= 1.0


def test_behaviour_reward_and_fractional_updates(tmp_path):
    """halfcheetah-capped is what SAC trains on and the file stores; 0.25 updates per step."""
    sac = SACCollectConfig(behaviour_reward="halfcheetah-capped", start_steps=100, update_after=100,
                           updates_per_step=0.25, batch_size=32, hidden_dim=32)
    path = collect_sac("halfcheetah", 300, tmp_path / "hc.hdf5", seed=0, quiet=True, sac=sac)
    data = read_hdf5(path)
    ctrl = 0.1 * np.square(data["actions"].astype(np.float64)).sum(1)
    np.testing.assert_allclose(data["rewards"], np.minimum(data["infos/x_velocity"], 3.0) - ctrl, atol=1e-5)
    assert data["metadata/sac_updates"] == (300 - 100 + 1) // 4
    assert data["metadata/behaviour_reward"] == b"halfcheetah-capped"
    assert not (tmp_path / "hc.hdf5.ckpt").exists()


def test_checkpoint_of_another_collection_is_refused(tmp_path):
    sac = {**SAC, "keep_checkpoint": True, "hidden_dim": 16, "start_steps": 100, "update_after": 100}
    collect_sac(path=tmp_path / "a.hdf5", quiet=True, sac=SACCollectConfig(**sac), **{**RUN, "steps": 400})
    assert (tmp_path / "a.hdf5.ckpt").exists()
    with pytest.raises(ValueError, match="seed"):
        collect_sac(path=tmp_path / "a.hdf5", quiet=True, sac=SACCollectConfig(**sac),
                    **{**RUN, "steps": 400, "seed": 9})
