"""Member-wise early stopping and elites: the pure rule on scripted losses, then its Lightning wiring."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from tensordict import TensorDict

from mopo_lightning.dynamics.batches import dynamics_dataloaders
from mopo_lightning.dynamics.early_stopping import MemberSnapshot, MemberwiseEarlyStopping
from mopo_lightning.dynamics.module import DynamicsModule


def _t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_first_epoch_always_improves():
    es = MemberwiseEarlyStopping(3)
    improved, stop = es.update(_t(5.0, 1e9, 0.1))
    assert improved.tolist() == [True, True, True] and not stop
    assert es.best_mse.tolist() == [5.0, 1e9, 0.1]


def test_exactly_one_percent_does_not_count_but_more_does():
    es = MemberwiseEarlyStopping(2)
    es.update(_t(100.0, 100.0))
    improved, _ = es.update(_t(99.0, 98.99))  # exactly 1% vs 1.01%
    assert improved.tolist() == [False, True]
    assert es.best_mse.tolist() == [100.0, 98.99]
    assert int(es.epochs_since_update) == 0


def test_improvement_is_relative_to_the_best_not_the_last_epoch():
    es = MemberwiseEarlyStopping(1)
    es.update(_t(100.0))
    for cur in (99.5, 99.2):  # 0.5% and 0.8% below the best: no
        assert not es.update(_t(cur))[0].item()
    assert es.update(_t(98.9))[0].item()  # 1.1% below the best (not the last epoch): yes
    assert es.update(_t(120.0))[0].tolist() == [False]  # worse: never
    assert es.best_mse.tolist() == [98.9]


def test_stops_after_six_epochs_in_a_row_without_any_member_improving():
    es = MemberwiseEarlyStopping(2, patience=6)
    es.update(_t(10.0, 10.0))
    flags = [es.update(_t(10.0, 10.0))[1] for _ in range(5)]
    assert flags == [False] * 5 and int(es.epochs_since_update) == 5
    improved, stop = es.update(_t(10.0, 9.0))  # one member improving resets the count
    assert improved.tolist() == [False, True] and not stop and int(es.epochs_since_update) == 0
    flags = [es.update(_t(10.0, 9.0))[1] for _ in range(6)]
    assert flags == [False] * 5 + [True]
    assert int(es.epochs) == 13


def test_elites_are_the_lowest_best_mse():
    es = MemberwiseEarlyStopping(7)
    es.update(_t(7, 6, 5, 4, 3, 2, 1))
    es.update(_t(0.5, 8, 8, 8, 8, 8, 8))  # only member 0 improves
    assert es.elites(5).tolist() == [0, 6, 5, 4, 3]


def test_state_survives_a_state_dict_round_trip():
    es = MemberwiseEarlyStopping(3)
    es.update(_t(3.0, 2.0, 1.0))
    es.update(_t(3.0, 2.0, 1.0))
    other = MemberwiseEarlyStopping(3)
    other.load_state_dict(es.state_dict())
    assert other.best_mse.tolist() == [3.0, 2.0, 1.0] and int(other.epochs_since_update) == 1


def test_snapshot_saves_only_flagged_members_and_restores_all():
    w = torch.zeros(3, 2, 2)
    snap = MemberSnapshot([w])
    w += 1.0
    snap.save([w], torch.tensor([False, True, False]))
    w += 1.0
    snap.restore([w])
    assert w[:, 0, 0].tolist() == [0.0, 1.0, 0.0]


# ---------------------------------------------------------------------- wiring in the LightningModule
class ScriptedHoldout(DynamicsModule):
    """Replaces the holdout MSE by a script and records each member's weights at every scored epoch."""

    def __init__(self, script: list[list[float]], **kwargs) -> None:
        super().__init__(**kwargs)
        self.script, self.calls, self.weights_at = script, 0, []

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        if self.trainer.sanity_checking:
            return
        self.weights_at.append(self.ensemble.weights[0].detach().clone())
        self._holdout_sse = torch.tensor(self.script[self.calls], dtype=torch.float64) * self._holdout_count
        self.calls += 1


def _tiny_data(n: int = 300):
    g = torch.Generator().manual_seed(0)
    obs, act = torch.randn(n, 3, generator=g), torch.rand(n, 2, generator=g) * 2 - 1
    td = TensorDict(
        {"observation": obs, "action": act, "next": {"observation": obs + 0.1 * act.sum(-1, keepdim=True),
                                                      "reward": act[:, :1]}},
        [n],
    )
    return dynamics_dataloaders(td, num_members=4, batch_size=64, seed=0)


def test_module_follows_the_rule_and_ignores_the_sanity_check():
    # member 0 improves once more at epoch 2; member 3 only by exactly 1% at epoch 1; then nobody.
    script = [[4.0, 3.0, 2.0, 100.0], [4.0, 3.0, 2.0, 99.0], [1.0, 3.0, 2.0, 99.0]]
    script += [[1.0, 3.0, 2.0, 100.0]] * 6 + [[0.0, 0.0, 0.0, 0.0]] * 5  # never reached
    module = ScriptedHoldout(
        script, obs_dim=3, act_dim=2, num_members=4, num_elites=2, hidden_dim=8, num_layers=2,
        weight_decays=(1e-4, 1e-4, 1e-4),
    )
    data = _tiny_data()
    trainer = pl.Trainer(
        max_epochs=-1, num_sanity_val_steps=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(module, train_dataloaders=data.train, val_dataloaders=data.holdout)

    assert module.calls == 9 and trainer.current_epoch == 9  # 3 epochs, then 6 without improvement
    es = module.early_stopping
    assert es.best_mse.tolist() == [1.0, 3.0, 2.0, 100.0]
    assert module.ensemble.elites.tolist() == [0, 2]
    assert bool(module.finalized)
    best_epoch = [2, 0, 0, 0]
    for member, epoch in enumerate(best_epoch):
        assert torch.equal(module.ensemble.weights[0][member], module.weights_at[epoch][member])
    assert not torch.equal(module.weights_at[-1][0], module.weights_at[2][0])  # weights did move on


def test_module_caps_epochs_and_refuses_unnormalised_training():
    data = _tiny_data()
    kwargs = {"obs_dim": 3, "act_dim": 2, "num_members": 4, "num_elites": 2, "hidden_dim": 8, "num_layers": 2,
                  "weight_decays": (1e-4, 1e-4, 1e-4)}
    trainer_kwargs = {"max_epochs": -1, "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                          "enable_model_summary": False, "accelerator": "cpu", "num_sanity_val_steps": 0}
    module = DynamicsModule(max_epochs=3, **kwargs)
    pl.Trainer(**trainer_kwargs).fit(module, train_dataloaders=data.train, val_dataloaders=data.holdout)
    assert int(module.early_stopping.epochs) == 3
    # the normaliser was fitted from the bootstrap loader's train split, not the holdout
    torch.testing.assert_close(module.ensemble.input_mean, data.train_inputs.mean(0))
    assert not bool(module.time_capped)  # its own epoch cap ended it
    module = DynamicsModule(max_time={"milliseconds": 1}, **kwargs)  # the first step outlasts the time cap
    # stage 1 hands the module's max_time to its Trainer: Lightning's timer stops mid-epoch, the holdout still
    # scores that epoch, and the module marks the model as cut by the clock
    pl.Trainer(**trainer_kwargs, max_time=module.hparams.max_time).fit(
        module, train_dataloaders=data.train, val_dataloaders=data.holdout)
    assert int(module.early_stopping.epochs) == 1 and bool(module.finalized) and bool(module.time_capped)

    plain = torch.utils.data.DataLoader(
        list(zip(data.train_inputs.expand(4, -1, -1).split(64, 1), data.train_targets.expand(4, -1, -1).split(64, 1),
                 strict=True)),
        batch_size=None,
    )
    with pytest.raises(RuntimeError, match="normaliser was never fitted"):
        pl.Trainer(**trainer_kwargs).fit(DynamicsModule(**kwargs), train_dataloaders=plain,
                                         val_dataloaders=data.holdout)
