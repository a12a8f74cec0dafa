"""SACModule: soft actor-critic with learned temperature, as a manually optimised LightningModule.

Sources: SAC (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications", arXiv 1812.05905)
and the softlearning code MOPO's authors (Yu et al. 2020) build on. MOPO's settings (reference
section 3): 2 x 256 ReLU MLPs, twin Q with soft-updated targets (tau 5e-3 every update), gamma 0.99,
Adam 3e-4 for actor, critics and alpha, alpha learned from log_alpha = 0, target entropy -3 for every
task (not -dim(A)). The loss terms (``loss_qvalue``, ``loss_actor``, ``loss_alpha``, as in TorchRL's
objectives) live in ``policy/losses.py``.

Hand-written rather than TorchRL's ``SACLoss`` (0.67x as fast), eager rather than compiled on CPU: see
``docs/performance.md``. Only ``("next", "terminated")`` stops bootstrapping: a time-limit row bootstraps.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import Tensor, nn

from mopo_lightning.guards import assert_finite
from mopo_lightning.lightning_paths import backward_and_step, trainer_of
from mopo_lightning.policy.losses import actor_loss, alpha_loss, qvalue_loss, soft_bellman_target
from mopo_lightning.policy.networks import EnsembleQ, TanhGaussianActor
from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD, TERMINATED

LOG_KEYS = ("loss_qvalue", "loss_actor", "loss_alpha", "alpha", "entropy", "q_mean", "q_max")
"""Names of ``update``'s diagnostics, logged as ``sac/<name>``; the loss terms keep TorchRL's names."""
LOG_NAMES = tuple(f"sac/{name}" for name in LOG_KEYS)
"""Their logged names."""


class _SamplingPolicy(nn.Module):
    """obs -> sampled action without gradients; shares the actor's live weights."""

    def __init__(self, actor: TanhGaussianActor, deterministic: bool = False) -> None:
        super().__init__()
        self.actor = actor
        self.deterministic = deterministic

    def forward(self, obs: Tensor) -> Tensor:
        return self.actor.act(obs, self.deterministic)


class SACModule(L.LightningModule):
    """SAC on TensorDict transition batches (keys in ``mopo_lightning.transitions``).

    Each ``training_step`` is one full SAC update (critics, actor, alpha, targets). ``sac_updates``
    counts them; ``trainer.global_step`` counts optimizer steps (3 per update).
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden_dim: int = 256,
        num_layers: int = 2,
        gamma: float = 0.99,
        tau: float = 5e-3,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        target_entropy: float = -3.0,
        init_log_alpha: float = 0.0,
        log_std_min: float = -20.0,
        log_std_max: float = 2.0,
        log_every_n: int = 50,
        check_finite_every: int | None = None,
        compile: bool = False,
    ) -> None:
        """
        Args:
            obs_dim: observation size (linked from the data).
            act_dim: action size (linked from the data); actions live in [-1, 1].
            hidden_dim: width of every hidden layer of actor and critics.
            num_layers: number of hidden layers of actor and critics.
            gamma: discount factor.
            tau: soft target update rate, applied after every update.
            actor_lr: Adam learning rate of the actor.
            critic_lr: Adam learning rate of the two critics.
            alpha_lr: Adam learning rate of log_alpha.
            target_entropy: entropy target of the learned temperature (MOPO uses -3 for every task).
            init_log_alpha: initial log temperature (0: alpha starts at 1).
            log_std_min: lower clip of the actor's log-std.
            log_std_max: upper clip of the actor's log-std.
            log_every_n: log ``sac/*`` diagnostics every this many updates (keeps host syncs rare; 0: never);
                Lightning writes those that fall on its ``trainer.log_every_n_steps`` (the CLI links the two).
            check_finite_every: read the device-side NaN/inf record every this many updates and stop the
                run naming the first bad update; each read is one host sync. None: every update on
                CPU (free there), every 1000 on an accelerator. Also read at epoch ends and checkpoints.
            compile: ``torch.compile`` the three loss terms (fullgraph) on the first update; meant for
                GPUs (slower on CPU; ``benchmarks/gpu.py`` measures it).
        """
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.gamma, self.tau, self.target_entropy = gamma, tau, target_entropy
        self.log_every_n = log_every_n
        self.actor = TanhGaussianActor(obs_dim, act_dim, hidden_dim, num_layers, log_std_min, log_std_max)
        self.critic = EnsembleQ(obs_dim, act_dim, hidden_dim, num_layers, num_q=2)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(float(init_log_alpha)))
        self.register_buffer("sac_updates", torch.zeros((), dtype=torch.long))
        # per LOG_KEYS entry, the first update at which it was non-finite (0: never); device-side
        self.register_buffer("nonfinite_at", torch.zeros(len(LOG_KEYS), dtype=torch.long), persistent=False)
        self._standalone_optimizers: list[torch.optim.Optimizer] | None = None
        self._loss_fns: tuple[Callable, Callable, Callable] | None = None  # eager or compiled terms
        self._cudagraphs = False
        self._n_updates: int | None = None  # host mirror of sac_updates, refreshed after loading
        self._checked_through = 0  # host: updates already covered by a finite check
        self.register_load_state_dict_post_hook(lambda module, _: module._forget_host_state())

    def forward(self, obs: Tensor) -> Tensor:
        """Deterministic evaluation action tanh(mean): obs [B, O] -> action [B, A]."""
        return self.act(obs, deterministic=True)

    # ---- loss terms (TorchRL style: one method each, TensorDicts of loss_* and diagnostics) ------
    @property
    def alpha(self) -> Tensor:
        """The current temperature exp(log_alpha), detached."""
        return self.log_alpha.detach().exp()

    def loss_qvalue(self, batch: TensorDict) -> TensorDict:
        """Critic term ``loss_qvalue`` (with ``q_mean``, ``q_max``) against the soft Bellman target."""
        return qvalue_loss(self.critic, batch[OBSERVATION], batch[ACTION], self.compute_target(batch))

    def loss_actor(self, batch: TensorDict) -> TensorDict:
        """Actor term ``loss_actor`` (with ``log_prob`` [B, 1] and ``entropy``) on fresh actions."""
        return actor_loss(self.actor, self.critic, batch[OBSERVATION], self.alpha)

    def loss_alpha(self, log_prob: Tensor) -> TensorDict:
        """Temperature term ``loss_alpha`` (with ``alpha``) given the actor's detached ``log_prob``."""
        return alpha_loss(self.log_alpha, log_prob, self.target_entropy)

    def compute_target(self, batch: TensorDict, alpha: Tensor | None = None) -> Tensor:
        """Soft Bellman target of ``batch`` (see ``losses.soft_bellman_target``) -> [B, 1]."""
        return soft_bellman_target(
            self.actor, self.critic_target, batch[NEXT_OBSERVATION], batch[REWARD], batch[TERMINATED],
            self.alpha if alpha is None else alpha, self.gamma,
        )

    # ---- training -------------------------------------------------------------------------------
    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        self.update(batch)

    def update(self, batch: TensorDict) -> TensorDict:
        """One SAC update: the critics on the soft Bellman target, then the actor on the stepped critics (as in
        softlearning) and the temperature (disjoint parameters, alpha and log pi enter each other's loss detached:
        one backward of the sum), then the soft targets. Returns the ``LOG_KEYS`` diagnostics."""
        actor_opt, critic_opt, alpha_opt = self._optimizers()
        loss_qvalue, loss_actor, loss_alpha = self._terms()
        q_terms = loss_qvalue(batch)
        backward_and_step(self, q_terms["loss_qvalue"], critic_opt)
        pi_terms = loss_actor(batch)
        alpha_terms = loss_alpha(pi_terms["log_prob"])
        backward_and_step(self, pi_terms["loss_actor"] + alpha_terms["loss_alpha"], actor_opt, alpha_opt)
        self.soft_update_targets()
        return self._count_and_guard(q_terms, pi_terms, alpha_terms)

    def _count_and_guard(self, q_terms: TensorDict, pi_terms: TensorDict, alpha_terms: TensorDict) -> TensorDict:
        """The one guard: count the update, record on the device the first update at which each diagnostic went
        non-finite, and read that record (one host sync) every ``check_finite_every`` updates; log every
        ``log_every_n`` (one host sync, as any logging). No other host sync, so the update runs ahead on a GPU."""
        if self._n_updates is None:  # first update, or the first after loading a state: one sync
            self._n_updates = self._checked_through = int(self.sac_updates)
        self.sac_updates += 1
        self._n_updates += 1
        # a fresh tensor in LOG_KEYS order: safe to keep even when the terms live in CUDA graphs
        values = torch.stack([q_terms["loss_qvalue"].detach(), pi_terms["loss_actor"].detach(),
                              alpha_terms["loss_alpha"].detach(), alpha_terms["alpha"], pi_terms["entropy"],
                              q_terms["q_mean"], q_terms["q_max"]])
        self.nonfinite_at.masked_fill_(~torch.isfinite(values) & (self.nonfinite_at == 0), self._n_updates)
        out = TensorDict(dict(zip(LOG_KEYS, values.unbind(), strict=True)), batch_size=[])
        if self._n_updates % self._check_every() == 0:
            self.check_finite()
        if self.log_every_n and self._n_updates % self.log_every_n == 0 and trainer_of(self) is not None:
            self.log_dict(dict(zip(LOG_NAMES, values.tolist(), strict=True)), on_step=True, on_epoch=False)
            self.log("updates", float(self._n_updates), prog_bar=True, logger=False)  # SAC updates so far
        return out

    def check_finite(self) -> None:
        """Raise ``NonFiniteError`` naming the first non-finite ``sac/*`` value and its update, if any.

        One host sync; covers every update since the previous check.
        """
        first, last = self._checked_through + 1, self._n_updates
        if last is not None:
            self._checked_through = last
        bad = [(step, i) for i, step in enumerate(self.nonfinite_at.tolist()) if step > 0]
        if bad:
            step, i = min(bad)  # earliest update; LOG_KEYS order on ties
            where = f"at SAC update {step} (found by the check of SAC updates {first} to {last})"
            # guards' wording, for a value known (from the device-side record) to be non-finite
            assert_finite({f"sac/{LOG_KEYS[i]}": torch.tensor(float("nan"))}, where)

    @torch.no_grad()
    def soft_update_targets(self) -> None:
        """theta' <- theta' + tau * (theta - theta'), fused over all critic tensors."""
        torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.tau)

    def compile_losses(self, mode: str | None = None) -> None:
        """``torch.compile(fullgraph=True)`` the three loss terms (what ``compile=True`` does, with the
        default mode); ``mode="reduce-overhead"`` adds CUDA graphs. See the module docstring."""
        self._loss_fns = tuple(torch.compile(fn, fullgraph=True, mode=mode)
                               for fn in (self.loss_qvalue, self.loss_actor, self.loss_alpha))
        self._cudagraphs = mode in ("reduce-overhead", "max-autotune")

    # ---- acting ---------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: Tensor, deterministic: bool = False) -> Tensor:
        """obs [B, O] -> action [B, A] in [-1, 1]: sampled, or tanh(mean) when deterministic."""
        return self.actor.act(obs, deterministic)

    def policy_module(self, deterministic: bool = False) -> TensorDictModule:
        """TorchRL policy reading ``observation`` and writing ``action`` (no grad, live weights)."""
        return TensorDictModule(
            _SamplingPolicy(self.actor, deterministic), in_keys=["observation"], out_keys=["action"]
        )

    def on_train_epoch_end(self) -> None:
        """Check for non-finite values (before ``ModelCheckpoint``, which runs after this hook); under
        DDP, check that every rank holds the same weights (gradients are all-reduced)."""
        self.check_finite()
        if self.trainer.world_size > 1:
            checksum = torch.stack([p.detach().double().sum() for p in self.parameters()]).sum()
            sums = self.all_gather(checksum)
            if not bool((sums == sums[0]).all()):
                raise RuntimeError(f"DDP ranks hold different SAC weights after {self._n_updates} updates: "
                                   f"{sums.tolist()}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A checkpoint never holds weights trained through a NaN: check first."""
        self.check_finite()

    # ---- optimisation ---------------------------------------------------------------------------
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Three Adams, in the order [actor, critics, alpha].

        The fused Adam kernel (CPU and CUDA) measured ~6% faster per update than the default one.
        """
        hp = self.hparams
        fused = True if self.device.type in ("cpu", "cuda") else None
        return [
            torch.optim.Adam(self.actor.parameters(), lr=hp.actor_lr, fused=fused),
            torch.optim.Adam(self.critic.parameters(), lr=hp.critic_lr, fused=fused),
            torch.optim.Adam([self.log_alpha], lr=hp.alpha_lr, fused=fused),
        ]

    def standalone_optimizers(self) -> list[torch.optim.Optimizer]:
        """The module's own [actor, critics, alpha] Adams, made on first call: what ``update`` steps
        when no Trainer is attached (online collection saves and restores their states)."""
        if self._standalone_optimizers is None:
            self._standalone_optimizers = self.configure_optimizers()
        return self._standalone_optimizers

    def _optimizers(self) -> list:
        """The Trainer's optimizers when attached; otherwise the standalone ones."""
        return self.optimizers() if trainer_of(self) is not None else self.standalone_optimizers()

    def _terms(self) -> tuple[Callable, Callable, Callable]:
        """The three loss terms, eager or compiled (made on the first update)."""
        if self._loss_fns is None:
            if self.hparams.get("compile", False):
                self.compile_losses()
            else:
                self._loss_fns = (self.loss_qvalue, self.loss_actor, self.loss_alpha)
        if self._cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()  # the last update's graph outputs may be overwritten
        return self._loss_fns

    def _forget_host_state(self) -> None:
        """After loading a state: the host counter is re-read, the old weights' NaN record dropped."""
        self._n_updates = None
        self.nonfinite_at.zero_()

    def _check_every(self) -> int:
        every = self.hparams.get("check_finite_every")
        return every if every else (1 if self.device.type == "cpu" else 1000)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_loss_fns"] = None  # compiled functions do not pickle; rebuilt on the next update
        return state
