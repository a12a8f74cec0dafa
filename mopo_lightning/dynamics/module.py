"""DynamicsModule: trains MOPO's probabilistic ensemble with Lightning, to member-wise early stopping.

Source: MOPO (Yu et al. 2020, arXiv 2005.13239) section 4.3 and appendix; the authors' code trains the
model with MBPO's ``BNN.train`` (Janner et al. 2019):
- loss = Gaussian NLL summed over members + 0.01 * (sum max_logvar - sum min_logvar) + weight decay;
  Adam lr 1e-3, batches of 256 from each member's own bootstrap resample (``batches.py``);
- after every epoch, holdout MSE of the mean per member drives ``MemberwiseEarlyStopping``; improved
  members' weights are snapshotted; at the end the snapshots are restored and the 5 lowest-MSE members
  become the elites.
The rule runs in module hooks, not a callback: training cannot stop correctly without it. The trainer
should get ``max_epochs=-1`` (or a large cap): this module sets ``trainer.should_stop`` itself.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from mopo_lightning.dynamics.batches import BootstrapBatches
from mopo_lightning.dynamics.early_stopping import MemberSnapshot, MemberwiseEarlyStopping
from mopo_lightning.dynamics.ensemble import DEFAULT_WEIGHT_DECAYS, GaussianEnsemble
from mopo_lightning.guards import ConfigError, assert_finite


def time_limit(max_time: str | dict[str, int] | None) -> timedelta | None:
    """``dynamics.max_time`` as the ``timedelta`` Lightning's timer will read, or a one-line ``ConfigError``
    before any work (Lightning itself would only fail once stage 1 starts)."""
    if max_time is None:
        return None
    try:
        if isinstance(max_time, str):
            days, hours, minutes, seconds = (int(part) for part in max_time.strip().split(":"))
            limit = timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)
        else:
            limit = timedelta(**dict(max_time))
    except (TypeError, ValueError):
        raise ConfigError(f"dynamics.max_time: expected \"DD:HH:MM:SS\" or a mapping such as {{minutes: 5}}, "
                          f"got {max_time!r}") from None
    if limit <= timedelta(0):
        raise ConfigError(f"dynamics.max_time must be positive, got {max_time!r}")
    return limit


class DynamicsModule(LightningModule):
    """Probabilistic dynamics ensemble with MOPO's training recipe.

    Args:
        obs_dim: observation size (linked from the data).
        act_dim: action size (linked from the data).
        num_members: ensemble members trained (all of them enter MOPO's penalty).
        num_elites: lowest-holdout-MSE members used to sample model transitions.
        hidden_dim: width of each hidden layer.
        num_layers: number of hidden SiLU layers.
        weight_decays: per-layer decay on weights, hidden layers then the output head.
        lr: Adam learning rate.
        logvar_loss_coef: weight of the learned log-variance bounds in the loss.
        max_epochs_since_update: stop after this many epochs in a row with no member improving.
        improvement_threshold: relative holdout-MSE improvement a member needs to count as improved.
        max_epochs: optional cap on training epochs (None: early stopping alone decides).
        max_time: optional cap on training time, Lightning's ``Trainer(max_time)`` (``"DD:HH:MM:SS"`` or a
            dict such as ``{"minutes": 5}``; None: no cap). A model that it cuts short depends on the wall
            clock: its run keeps it, the dynamics cache never serves it.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        num_members: int = 7,
        num_elites: int = 5,
        hidden_dim: int = 200,
        num_layers: int = 4,
        weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS,
        lr: float = 1e-3,
        logvar_loss_coef: float = 0.01,
        max_epochs_since_update: int = 6,
        improvement_threshold: float = 0.01,
        max_epochs: int | None = None,
        max_time: str | dict[str, int] | None = None,
    ) -> None:
        super().__init__()
        time_limit(max_time)
        weight_decays = tuple(float(w) for w in weight_decays)
        self.save_hyperparameters()
        self.ensemble = GaussianEnsemble(
            obs_dim, act_dim, num_members, num_elites, hidden_dim, num_layers, weight_decays
        )
        self.early_stopping = MemberwiseEarlyStopping(
            num_members, improvement_threshold, max_epochs_since_update
        )
        self.snapshot = MemberSnapshot(self.ensemble.member_parameters())
        self.register_buffer("finalized", torch.tensor(False))  # best weights restored, elites chosen
        # True when max_time, a wall clock, ended training: such a model is not reproducible (stage 1
        # keeps it in its run and never serves it from the cache)
        self.register_buffer("time_capped", torch.tensor(False))
        self.automatic_optimization = False  # one plain step per batch: Lightning's closure costs ~4%
        # Epoch sums of the batch-size-weighted train_mse and train_loss ([2], on the device) and their
        # weight; a plain dict, so per-step updates skip nn.Module.__setattr__ (~1% of a step).
        self._epoch: dict[str, Any] = {"sums": None, "count": 0}
        self._decayed: list[Tensor] | None = None  # the ensemble's weights, listed once
        self._holdout_sse: Tensor | None = None  # [E]
        self._holdout_count = 0
        self._train_start: float | None = None
        self._stopped_itself = False  # early stopping or max_epochs ended training (not the trainer's clock)
        self._seconds_before = 0.0  # training seconds of earlier (resumed-from) runs
        self.fingerprint: dict | None = None  # what made this model (dynamics/fingerprint.py), if known
        # Each uncertainty penalty's scale on the training data ({version, rows, kinds}, measured after
        # training by stage 1: model_env.penalties.measure_scales); outside the fingerprint: a stage-2 matter.
        self.penalty_scales: dict | None = None

    def forward(self, inputs: Tensor) -> tuple[Tensor, Tensor]:
        """Raw inputs [E, B, in] or [B, in] -> (mean, logvar) [E, B, out]."""
        return self.ensemble(inputs)

    def predict(self, obs: Tensor, action: Tensor, **kwargs) -> tuple[Tensor, Tensor]:
        """See ``GaussianEnsemble.predict``: (mean, std) [E, B, 1 + O], next state in columns 1:."""
        return self.ensemble.predict(obs, action, **kwargs)

    def fit_normalizer(self, train_inputs: Tensor) -> None:
        """Standardise inputs with train-split statistics (train_inputs [N, O + A])."""
        self.ensemble.fit_normalizer(train_inputs.to(self.ensemble.input_mean.device))

    # ------------------------------------------------------------------ training
    def on_train_start(self) -> None:
        if not bool(self.ensemble.normalizer_fitted):
            dataset = getattr(self.trainer.train_dataloader, "dataset", None)
            if not isinstance(dataset, BootstrapBatches):
                raise RuntimeError(
                    "DynamicsModule: the input normaliser was never fitted. Call "
                    "module.fit_normalizer(train_inputs) before trainer.fit, or train from a "
                    "BootstrapBatches loader (dynamics.batches.dynamics_dataloaders), which fits it."
                )
            self.fit_normalizer(dataset.inputs)
        self._train_start = time.perf_counter()

    @property
    def train_seconds(self) -> float:
        """Training time so far, across resumes (kept in checkpoints, so a loaded model reports it too)."""
        running = 0.0 if self._train_start is None else time.perf_counter() - self._train_start
        return self._seconds_before + running

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        """One Adam step on the full loss (manual optimisation; see ``configure_optimizers``).

        The weight decay's gradient, wd * W per layer, is added to the weights' gradients in place
        (``GaussianEnsemble.add_weight_decay_grad``) instead of an autograd term per layer (autograd's d/dW of
        wd * sum(W^2) / 2 is wd * W too). Nothing is read back to the host except the one finiteness
        check; epoch metrics are summed on the device and logged once per epoch, the step NLL every
        ``log_every_n_steps`` steps (``self.log`` costs ~0.5 ms of Python per call: ~7% of a step). Backward and
        step go through Lightning (``manual_backward``, the ``LightningOptimizer``).
        """
        inputs, targets = batch  # [E, B, in], [E, B, out]
        opt = self.optimizers()
        opt.zero_grad(set_to_none=True)
        ens = self.ensemble
        nll, mse = ens.nll_loss(inputs, targets)
        loss = nll + self.hparams.logvar_loss_coef * ens.logvar_bound_loss()  # + weight decay, below
        if not bool(torch.isfinite(loss)):
            assert_finite({"dynamics/train_loss": loss.detach()},
                          f"at dynamics epoch {self.current_epoch}, step {self.global_step}")
        self.manual_backward(loss)
        weights = self._decayed = self._decayed or list(ens.weights)
        ens.add_weight_decay_grad(weights)
        decay = ens.weight_decay_value(weights)
        opt.step()

        n = inputs.shape[1]
        epoch = self._epoch
        with torch.no_grad():
            values = torch.stack([mse.mean(), loss.detach() + decay]) * n  # train_mse, train_loss
            epoch["sums"] = values if epoch["sums"] is None else epoch["sums"] + values
        epoch["count"] += n
        every = self.trainer.log_every_n_steps  # 0: no step logs
        if every and self.global_step % every == 0:  # the steps Lightning writes; a host sync each
            self.log("dynamics/train_nll", float(nll.detach()) / self.hparams.num_members)

    def on_train_epoch_start(self) -> None:
        self._epoch.update(sums=None, count=0)

    def on_train_epoch_end(self) -> None:
        if self._epoch["sums"] is None:
            return
        mse, loss = (self._epoch["sums"] / self._epoch["count"]).tolist()
        self.log_dict({"dynamics/train_mse": mse, "dynamics/train_loss": loss}, sync_dist=True)  # ranks' mean

    # ------------------------------------------------------------------ holdout
    def on_validation_epoch_start(self) -> None:
        self._holdout_sse = None
        self._holdout_count = 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, targets = batch  # [H, in], [H, out]: the same rows for every member
        mean, _ = self.ensemble(inputs)  # [E, H, out]
        sse = (mean - targets).square().sum(dim=(1, 2)).double()  # [E]
        self._holdout_sse = sse if self._holdout_sse is None else self._holdout_sse + sse
        self._holdout_count += targets.numel()

    def on_validation_epoch_end(self) -> None:
        if self._holdout_sse is None or self.trainer.sanity_checking:
            return  # Lightning's sanity check is not an epoch
        mse = self._holdout_sse / self._holdout_count  # [E]
        self._log_holdout(mse)
        if self.trainer.state.fn != TrainerFn.FITTING:
            return  # trainer.validate(): report only
        improved, stop = self.early_stopping.update(mse)
        self.snapshot.save(self.ensemble.member_parameters(), improved.to(self.device))
        self.ensemble.elites.copy_(self.early_stopping.elites(self.hparams.num_elites))
        self._log_stopping(mse, improved)
        epochs = int(self.early_stopping.epochs)
        if self.hparams.max_epochs is not None and epochs >= self.hparams.max_epochs:
            stop = True
        # Ranks must agree, or DDP would hang (Lightning's max_time timer broadcasts its own decision).
        stop = self.trainer.strategy.reduce_boolean_decision(bool(stop), all=False)
        self._stopped_itself = stop
        if stop:
            self.finalize()  # before ModelCheckpoint's on_validation_end, so its last file is final
            self.trainer.should_stop = True

    def on_train_end(self) -> None:
        self._seconds_before, self._train_start = self.train_seconds, None  # the clock stops here
        # Training ends by the module's own rule (early stopping, max_epochs) or by the trainer's max_time.
        if self.hparams.max_time is not None and not self._stopped_itself:
            self.time_capped.fill_(True)
        self.finalize()  # also when the trainer's own caps ended training
        if isinstance(self.logger, TensorBoardLogger):  # indices, not a curve: one line of text, not scalars
            self.logger.experiment.add_text(
                "dynamics/elites", str(self.ensemble.elites.tolist()), self.global_step
            )

    @torch.no_grad()
    def finalize(self) -> None:
        """Restore each member's best weights and pick the elites (idempotent)."""
        if int(self.early_stopping.epochs) == 0:
            return  # never scored: nothing to restore
        self.snapshot.restore(self.ensemble.member_parameters())
        self.ensemble.elites.copy_(self.early_stopping.elites(self.hparams.num_elites))
        self.finalized.fill_(True)

    def _log_holdout(self, mse: Tensor) -> None:
        metrics = {f"dynamics/holdout_mse/member_{i}": float(v) for i, v in enumerate(mse)}
        metrics["dynamics/holdout_mse/mean"] = float(mse.mean())
        self.log_dict(metrics, sync_dist=True)  # every rank scores the whole holdout: the same numbers

    def _log_stopping(self, mse: Tensor, improved: Tensor) -> None:
        es, ens = self.early_stopping, self.ensemble
        metrics = {
            "dynamics/holdout_mse/elites": float(mse[ens.elites].mean()),
            "dynamics/holdout_mse/elites_best": float(es.best_mse[ens.elites].mean()),
            "dynamics/members_improved": float(improved.sum()),
            "dynamics/epochs_since_update": float(es.epochs_since_update),
            "dynamics/max_logvar": float(ens.max_logvar.mean()),
            "dynamics/min_logvar": float(ens.min_logvar.mean()),
        }
        self.log_dict(metrics, sync_dist=True)  # also in ``trainer.callback_metrics`` (a callback may monitor them)

    # ------------------------------------------------------------------ optimiser
    def configure_optimizers(self) -> torch.optim.Optimizer:
        """Adam over every parameter, fused kernel. No ``weight_decay`` here: the authors' decay is an L2
        term of the loss, added to the gradients in ``training_step`` (before Adam's moments, as a loss term)."""
        return torch.optim.Adam(self.ensemble.parameters(), lr=self.hparams.lr, fused=True)

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain floats and a dict of JSON values: they load with weights_only=True.
        checkpoint["dynamics_train_seconds"] = float(self.train_seconds)
        if self.fingerprint is not None:
            checkpoint["dynamics_fingerprint"] = dict(self.fingerprint)
        if self.penalty_scales is not None:
            checkpoint["dynamics_penalty_scales"] = dict(self.penalty_scales)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._seconds_before = float(checkpoint.get("dynamics_train_seconds", 0.0))
        self.fingerprint = checkpoint.get("dynamics_fingerprint")
        self.penalty_scales = checkpoint.get("dynamics_penalty_scales")


def load_dynamics(path: str | Path, map_location: str | torch.device = "cpu") -> DynamicsModule:
    """Load a trained DynamicsModule from a Lightning checkpoint (``weights_only`` unpickling)."""
    module = DynamicsModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    return module.eval()
