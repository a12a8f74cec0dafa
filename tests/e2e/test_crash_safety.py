"""Honest failure: NaN guards keep the last good checkpoint; Ctrl-C / SIGTERM save a resumable one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import lightning as L
import pytest
import torch
from conftest import collected_dataset, run_cli
from test_resume import workdir  # noqa: F401  (shared fixture: a tiny trained dynamics checkpoint)

from mopo_lightning.callbacks.checkpointing import AtomicCheckpointIO, EpochCheckpoint
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.guards import NonFiniteError
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.settings import MOPOSettings
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.training.datamodule import OfflineDataModule
from mopo_lightning.training.mixed_data import MixedDataModule


def _hopper_datamodule(learner=None) -> MixedDataModule:
    data = OfflineDataModule(task="hopper", path=str(collected_dataset("hopper", 2_000, seed=0)), updates_per_epoch=25,
                             seed=0)
    data.setup("fit")
    ensemble = GaussianEnsemble(data.obs_dim, data.act_dim, num_members=3, num_elites=2, hidden_dim=32)
    ensemble.fit_normalizer(torch.cat([data.real["observation"], data.real["action"]], -1))
    mopo = MOPOSettings(rollout_length=2, rollout_batch_size=300, rollout_freq=25)
    mdp = ModelMDP.from_settings(mopo, None, data.task_spec)
    dm = MixedDataModule(data.rows(), data.task_spec, ensemble, mdp, mopo,
                         learner, batch_size=data.hparams.batch_size, updates_per_epoch=25, seed=0)
    dm.setup()
    return dm


OBS, ACT = 11, 3  # hopper


class PoisonActor(L.Callback):
    """Injects a NaN into the actor's weights before a given SAC update."""

    def __init__(self, before_update: int) -> None:
        self.before_update = before_update

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if int(pl_module.sac_updates) == self.before_update:
            with torch.no_grad():
                next(pl_module.actor.parameters()).view(-1)[0] = float("nan")


@pytest.mark.parametrize("background", [False, True])
def test_nan_in_sac_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, background):
    module = SACModule(OBS, ACT, hidden_dim=32)
    dm = _hopper_datamodule(module)
    checkpoint = EpochCheckpoint(tmp_path, every_n_epochs=1, keep=1)
    trainer = L.Trainer(max_epochs=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[PoisonActor(before_update=60), checkpoint],
                        plugins=[AtomicCheckpointIO(background=background)])
    with pytest.raises(NonFiniteError, match=r"non-finite sac/\w+ at SAC update 61"):
        trainer.fit(module, datamodule=dm)
    state = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert int(state["state_dict"]["sac_updates"]) == 50  # the end of epoch 2, written before the NaN
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["epoch0001.ckpt", "last.ckpt"]


def test_a_nan_policy_is_never_evaluated_even_with_sparse_checks():
    """With checks every 1000 updates (the accelerator default), evaluation still refuses a NaN policy."""
    from mopo_lightning.callbacks.evaluation import MuJoCoEvaluation

    module = SACModule(OBS, ACT, hidden_dim=32, check_finite_every=1000)
    dm = _hopper_datamodule(module)
    evaluation = MuJoCoEvaluation(num_episodes=1, max_episode_steps=10, task="hopper")
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, callbacks=[PoisonActor(before_update=10), evaluation])
    with pytest.raises(NonFiniteError, match=r"non-finite sac/\w+ at SAC update 11"):
        trainer.fit(module, datamodule=dm)
    assert evaluation.history == []  # stopped before the first evaluation


def test_nan_in_model_predictions_stops_the_rollout():
    dm = _hopper_datamodule()
    with torch.no_grad():
        dm.ensemble.weights[-1].fill_(float("nan"))
    module = SACModule(OBS, ACT, hidden_dim=32)
    with pytest.raises(NonFiniteError, match=r"model prediction \(next observation\) in the model rollout"):
        dm.rollouts.rollout(module.policy_module())


def test_nan_in_dynamics_training_names_the_step():
    from mopo_lightning.dynamics.batches import dynamics_dataloaders
    from mopo_lightning.dynamics.module import DynamicsModule

    dm = _hopper_datamodule()
    module = DynamicsModule(OBS, ACT, num_members=3, num_elites=2, hidden_dim=32, max_epochs=3)
    data = dynamics_dataloaders(dm.real, num_members=3)
    module.fit_normalizer(data.train_inputs)
    with torch.no_grad():
        module.ensemble.max_logvar.fill_(float("nan"))
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    with pytest.raises(NonFiniteError, match=r"dynamics/train_loss at dynamics epoch 0, step 0"):
        trainer.fit(module, train_dataloaders=data.train, val_dataloaders=data.holdout)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_a_resumable_checkpoint(workdir, signum):  # noqa: F811
    cwd, args = workdir
    run_name = f"signal{int(signum)}"
    run = ["fit", *args, "--run_name", run_name, "--trainer.max_epochs", "30"]
    sac_dir = cwd / "checkpoints" / run_name / "sac"
    proc = subprocess.Popen([sys.executable, "-m", "mopo_lightning.commands.cli", *run], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not (sac_dir / "last.ckpt").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, out[-2000:]
    assert "resume with --ckpt_path last" in out
    assert (sac_dir / "last.ckpt").resolve().name == "interrupted.ckpt"
    stopped_at = int(torch.load(sac_dir / "last.ckpt", weights_only=True)["state_dict"]["sac_updates"])
    assert stopped_at >= 40
    results = json.loads((sac_dir.parent / "results.json").read_text())
    assert results["status"] == "stopped" and results["status_detail"] == {"signal": int(signum)}
    # Resume and finish a short run: evaluation continues on the same 40-update grid.
    run_cli(*run[:-1], "3", "--ckpt_path", "last", cwd=cwd)
    results = json.loads((cwd / "checkpoints" / run_name / "results.json").read_text())
    assert [e["sac_updates"] for e in results["evaluations"]][-1] == 120
    assert results["status"] == "finished" and results["planned"]["sac_updates"] == 120
    final = torch.load(sac_dir / "last.ckpt", weights_only=True)
    assert int(final["state_dict"]["sac_updates"]) == 120
