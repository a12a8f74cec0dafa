"""The fast stage-1 step (manual optimisation, fused weight-decay gradient, epoch-summed logging) trains the
same model as the plain recipe: a reference loop in this file (autograd weight-decay term, fused Adam, the
same batches) reaches the same holdout MSE per member, to float reordering (asserted within 1%)."""

from __future__ import annotations

import lightning as L
import torch
from conftest import collected_dataset
from lightning_calls import count_lightning_wrappers

from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.dynamics.batches import dynamics_dataloaders
from mopo_lightning.dynamics.early_stopping import MemberwiseEarlyStopping
from mopo_lightning.dynamics.module import DynamicsModule

EPOCHS = 3


def _reference_best_mse(module: DynamicsModule, data, epochs: int) -> torch.Tensor:
    """MOPO's recipe written plainly: loss = NLL + 0.01 * bounds + sum wd * |W|^2 / 2, one Adam step per batch."""
    ens = module.ensemble
    opt = torch.optim.Adam(ens.parameters(), lr=module.hparams.lr, fused=True)
    stopping = MemberwiseEarlyStopping(module.hparams.num_members)
    for _ in range(epochs):
        for inputs, targets in data.train:
            opt.zero_grad(set_to_none=True)
            nll, _ = ens.nll_loss(inputs, targets)
            (nll + 0.01 * ens.logvar_bound_loss() + ens.weight_decay_loss()).backward()
            opt.step()
        with torch.no_grad():
            mean, _ = ens(data.holdout_inputs)
            stopping.update((mean - data.holdout_targets).square().mean(dim=(1, 2)).double())
    return stopping.best_mse


def test_fast_step_trains_the_reference_model(tmp_path):
    td = load_dataset(collected_dataset("hopper", 2_000, seed=0), "hopper")
    hp = {"num_members": 3, "num_elites": 2, "hidden_dim": 32, "max_epochs": EPOCHS}

    torch.manual_seed(0)
    fast = DynamicsModule(td["observation"].shape[-1], td["action"].shape[-1], **hp)
    torch.manual_seed(0)
    reference = DynamicsModule(td["observation"].shape[-1], td["action"].shape[-1], **hp)
    assert all(torch.equal(a, b) for a, b in zip(fast.parameters(), reference.parameters(), strict=True))

    data = dynamics_dataloaders(td, num_members=3, seed=0)
    fast.fit_normalizer(data.train_inputs)
    trainer = L.Trainer(max_epochs=-1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=tmp_path)
    trainer.fit(fast, data.train, data.holdout)
    assert int(fast.early_stopping.epochs) == EPOCHS

    data = dynamics_dataloaders(td, num_members=3, seed=0)  # the same bootstrap and epoch orders
    reference.fit_normalizer(data.train_inputs)
    expected = _reference_best_mse(reference, data, EPOCHS)
    got = fast.early_stopping.best_mse
    torch.testing.assert_close(got, expected, rtol=0.01, atol=0.0)


def test_stage1_steps_go_through_lightnings_backward_and_step(tmp_path, monkeypatch):
    """Each stage-1 batch's backward and optimizer step go through Lightning's public wrappers (``manual_backward``,
    ``LightningOptimizer.step``) even with no hook to serve, and ``global_step`` counts the steps; a shortcut past
    either (the one measured at ~1% of an epoch and removed) fails here."""
    calls = count_lightning_wrappers(monkeypatch)
    td = load_dataset(collected_dataset("hopper", 2_000, seed=0), "hopper")
    module = DynamicsModule(td["observation"].shape[-1], td["action"].shape[-1], num_members=3, num_elites=2,
                            hidden_dim=16, max_epochs=2)
    data = dynamics_dataloaders(td, num_members=3, seed=0)
    trainer = L.Trainer(max_epochs=-1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                        default_root_dir=tmp_path)
    trainer.fit(module, data.train, data.holdout)
    steps = 2 * len(data.train)  # one backward and one step per batch, two epochs
    assert calls == {"manual_backward": steps, "step": steps} and trainer.global_step == steps
