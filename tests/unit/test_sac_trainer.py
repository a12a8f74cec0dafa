"""SACModule inside a Lightning Trainer: counters, sac/* logs, checkpoint contents, resume, NaN stops."""

from __future__ import annotations

import csv

import lightning as L
import pytest
import torch
from conftest import random_sac_batches
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning_calls import count_lightning_wrappers
from torch.utils.data import DataLoader

from mopo_lightning.guards import NonFiniteError
from mopo_lightning.policy.sac import LOG_KEYS, SACModule

OBS, A, B = 3, 2, 32


def loader(n: int, seed: int = 0) -> DataLoader:
    return DataLoader(random_sac_batches(n, OBS, A, B, seed), batch_size=None, collate_fn=lambda x: x)


def trainer(tmp_path, max_steps: int, log_every: int = 5) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        logger=CSVLogger(tmp_path, name="sac", version=0),
        log_every_n_steps=log_every,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def test_fit_counts_updates_logs_and_checkpoints(tmp_path):
    torch.manual_seed(0)
    sac = SACModule(OBS, A, hidden_dim=16, log_every_n=5)
    tr = trainer(tmp_path, max_steps=3 * 10)  # global_step counts 3 optimizer steps per update
    tr.fit(sac, train_dataloaders=loader(10))
    assert sac.sac_updates.item() == 10 and tr.global_step == 30

    with open(tmp_path / "sac" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert {f"sac/{k}" for k in LOG_KEYS} <= set(rows[0])
    assert [r["step"] for r in rows if r["sac/loss_qvalue"]] == ["4", "9"]

    ckpt_path = tmp_path / "sac.ckpt"
    tr.save_checkpoint(ckpt_path)
    ckpt = torch.load(ckpt_path, weights_only=True)
    assert len(ckpt["optimizer_states"]) == 3
    state = ckpt["state_dict"]
    assert {"log_alpha", "sac_updates", "critic_target.weights.0"} <= set(state)
    assert state["sac_updates"].item() == 10

    # resume: counter, targets and optimizer moments come back, and counting continues
    resumed = SACModule(OBS, A, hidden_dim=16, log_every_n=5)
    tr2 = trainer(tmp_path / "resume", max_steps=3 * 12)
    tr2.fit(resumed, train_dataloaders=loader(10, seed=1), ckpt_path=ckpt_path)
    assert resumed.sac_updates.item() == 12
    assert torch.equal(ckpt["optimizer_states"][0]["state"][0]["step"], torch.tensor(10.0))
    assert tr2.optimizers[0].state_dict()["state"][0]["step"].item() == 12


def test_load_state_dict_resyncs_the_host_counter():
    a = SACModule(OBS, A, hidden_dim=16, log_every_n=1)
    b = SACModule(OBS, A, hidden_dim=16, log_every_n=1)
    batch = next(iter(loader(1)))
    for _ in range(3):
        a.update(batch)
    b.update(batch)  # b's host mirror now says 1
    b.load_state_dict(a.state_dict())
    b.update(batch)
    assert b.sac_updates.item() == 4 and b._n_updates == 4


class _PoisonActor(L.Callback):
    """A NaN in the actor's weights before the given SAC update."""

    def __init__(self, before_update: int) -> None:
        self.before_update = before_update

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if int(pl_module.sac_updates) == self.before_update:
            with torch.no_grad():
                pl_module.actor.net[0].weight[0, 0] = float("nan")


def test_rare_finite_checks_still_stop_before_a_poisoned_checkpoint(tmp_path):
    # checks every 1000 updates (an accelerator's default): the epoch-end check catches the NaN of update
    # 13 before ModelCheckpoint writes epoch 1, and names the update the device-side record kept
    sac = SACModule(OBS, A, hidden_dim=16, check_finite_every=1000)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1, every_n_epochs=1)
    tr = L.Trainer(max_epochs=3, logger=False, callbacks=[_PoisonActor(before_update=12), checkpoint],
                   enable_progress_bar=False, enable_model_summary=False)
    message = r"at SAC update 13 \(found by the check of SAC updates 11 to 20\)"
    with pytest.raises(NonFiniteError, match=message):
        tr.fit(sac, train_dataloaders=loader(10))
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["epoch=0-step=30.ckpt"]


def test_updates_go_through_lightnings_backward_and_step(monkeypatch):
    """Each update's two backward passes and three optimizer steps go through Lightning's public wrappers
    (``manual_backward``, ``LightningOptimizer.step``) even with no hook to serve, and ``global_step`` counts the
    steps; a shortcut past either (the one measured at ~1% of an epoch and removed) fails here."""
    calls = count_lightning_wrappers(monkeypatch)
    sac = SACModule(OBS, A, hidden_dim=16)
    tr = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                   enable_model_summary=False)
    tr.fit(sac, train_dataloaders=loader(8))
    assert calls == {"manual_backward": 2 * 8, "step": 3 * 8}  # per update: critics; then actor and alpha together
    assert tr.global_step == 3 * 8

