"""PremiseMonitor: MOPO's premise measured live at every evaluation (figures in ``diagnostics/premise.py``).

It listens to ``MuJoCoEvaluation`` (one of its ``listeners``, handed in by the recipe: the evaluation then records
its episodes' real transitions) and, on those
transitions, measures the elite ensemble's true one-step error, its NLL, every penalty kind's u(s, a)
(``model_env/penalties.py``, whichever kind trains), how well each ranks the error (Spearman), how often the error
exceeds it, the penalised and raw H-step model returns
of the evaluation policy branched from the visited states through the run's model MDP against the real H-step
returns (H: the run's rollout length, as MOPO's rollouts use it), and the visited states' distance to the data.
Logged under ``premise/`` (``premise/<kind>/...`` for each penalty kind; the trained kind's also unprefixed) through
``pl_module.log_dict`` at the moment and with the options ``eval/*`` uses, so both land at the same x in
TensorBoard; one figure (calibration of u, u against the error, penalised against real H-step returns; for
the trained kind and MOPO's two) as a TensorBoard image at that x; the scalars also go into the evaluation's
entry of ``results.json`` (``premise``, with ``penalty_coefs``: the lambda each kind's returns used).

Under DDP each rank's transitions are gathered on every rank (padded ``all_gather``, a collective all
ranks join) and rank 0 alone computes and logs.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import lightning as L
import numpy as np
import torch
from tensordict import TensorDict

from mopo_lightning.callbacks.evaluation import EvalResult, eval_mode
from mopo_lightning.diagnostics.premise import (
    DEFINITIONS,
    EPISODE,
    MAX_DATA_STATES,
    MAX_ROWS,
    MAX_START_STATES,
    STEP,
    DataReference,
    Premise,
    evenly_spaced,
    premise_metrics,
)
from mopo_lightning.machine import is_rank_zero
from mopo_lightning.model_env.env import EnsemblePredictor
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD, TERMINATED, TRUNCATED

log = logging.getLogger(__name__)

_COLUMNS = (OBSERVATION, ACTION, REWARD, NEXT_OBSERVATION, TERMINATED, TRUNCATED, EPISODE, STEP)
SCATTER_POINTS = 1_000
"""Points drawn per scatter panel of the figure (evenly spaced rows above this)."""


class PremiseMonitor(L.Callback):
    """Measure MOPO's premise on every ``every_n_evals``-th evaluation (module docstring)."""

    def __init__(self, every_n_evals: int = 1, rollout_length: int | None = None, max_rows: int = MAX_ROWS,
                 max_start_states: int = MAX_START_STATES, max_data_states: int = MAX_DATA_STATES,
                 figures: bool = True, seed: int = 0, *, ensemble: EnsemblePredictor, data_observations: torch.Tensor,
                 mdp: ModelMDP) -> None:
        """
        Args:
            every_n_evals: measure at every n-th MuJoCo evaluation (0: off).
            rollout_length: H of the branched model returns; None: the run's h (``mopo.rollout_length``).
            max_rows: recorded transitions measured (evenly spaced above this).
            max_start_states: start states of the H-step model returns (evenly spaced above this).
            max_data_states: dataset observations searched for the nearest neighbour (a fixed subsample).
            figures: log the premise figure as a TensorBoard image (matplotlib, one render per evaluation).
            seed: seed of the model rollouts' generator and of the dataset subsample.
            ensemble: the trained model; data_observations: the dataset's observations; mdp: the run's model MDP
                (``ModelMDP.from_settings``). Handed in by the recipe, which hands the monitor to the evaluation.
        """
        super().__init__()
        self.every_n_evals = every_n_evals
        rollout_length = mdp.rollout_length if rollout_length is None else rollout_length
        if rollout_length < 1:
            raise ValueError(f"premise: rollout_length must be >= 1 (None: the run's h), got {rollout_length}")
        self.rollout_length = int(rollout_length)
        self.max_rows, self.max_start_states, self.max_data_states = max_rows, max_start_states, max_data_states
        self.figures, self.seed = figures, seed
        self.ensemble, self.mdp = ensemble, mdp
        self.data_observations = data_observations
        self.latest: Premise | None = None
        self._reference: DataReference | None = None
        self._evaluations = 0
        self._described = False

    # ------------------------------------------------------------------ the listener hook
    def on_evaluation(self, trainer: L.Trainer, pl_module: L.LightningModule, result: EvalResult,
                      entry: dict[str, Any]) -> None:
        self._evaluations += 1
        if not self.every_n_evals or self._evaluations % self.every_n_evals:
            return
        data = self._gather(trainer, pl_module, result.transitions)
        if not is_rank_zero(trainer) or data is None:
            return
        ensemble, mdp = self.ensemble, self.mdp
        device = ensemble.elites.device
        if self._reference is None:
            self._reference = DataReference.from_observations(self.data_observations, self.max_data_states, self.seed)
        with eval_mode(pl_module):
            premise = premise_metrics(
                ensemble, data.to(device), mdp=mdp,
                policy=lambda obs: pl_module.act(obs.to(pl_module.device), deterministic=True).to(device),
                rollout_length=self.rollout_length, reference=self._reference, seed=self.seed,
                max_rows=self.max_rows, max_start_states=self.max_start_states)
        self.latest = premise
        entry["premise"] = {"penalty_kind": mdp.penalty_kind, "penalty_coefs": dict(mdp.penalty_coefs_raw),
                            **premise.scalars}
        # the path eval/* takes (MuJoCoEvaluation.on_train_epoch_end): Lightning logs both at one step
        pl_module.log_dict({f"premise/{k}": v for k, v in premise.scalars.items()}, on_step=False, on_epoch=True,
                           rank_zero_only=True)
        self._log_images(trainer, premise, lightning_epoch_step(trainer, pl_module))

    # ------------------------------------------------------------------ DDP: every rank's episodes
    def _gather(self, trainer: L.Trainer, pl_module: L.LightningModule,
                local: TensorDict | None) -> TensorDict | None:
        if trainer.world_size == 1:
            return local
        if local is None:
            raise RuntimeError("premise: the evaluation did not record its transitions")
        flat = torch.cat([local[k].reshape(local.shape[0], -1).double() for k in _COLUMNS], dim=-1)
        sizes = trainer.strategy.all_gather(torch.tensor([flat.shape[0]], device=pl_module.device))
        most = int(sizes.max())
        padded = torch.full((most, flat.shape[1]), float("nan"), dtype=torch.float64, device=pl_module.device)
        padded[: flat.shape[0]] = flat.to(pl_module.device)
        rows = trainer.strategy.all_gather(padded).reshape(-1, flat.shape[1]).cpu()
        rows = rows[~torch.isnan(rows[:, -1])]
        widths = [local[k].reshape(local.shape[0], -1).shape[1] for k in _COLUMNS]
        parts = dict(zip(_COLUMNS, rows.split(widths, dim=-1), strict=True))
        order = torch.argsort(parts[EPISODE][:, 0] * (1 << 20) + parts[STEP][:, 0])
        out = TensorDict({}, batch_size=[rows.shape[0]])
        for key, value in parts.items():
            value = value[order]
            if key in (EPISODE, STEP):
                out[key] = value[:, 0].long()
            elif key in (TERMINATED, TRUNCATED):
                out[key] = value.bool()
            else:
                out[key] = value.float()
        out["next", "done"] = out[TERMINATED] | out[TRUNCATED]
        return out

    # ------------------------------------------------------------------ TensorBoard images and text
    def _log_images(self, trainer: L.Trainer, premise: Premise, step: int) -> None:
        writer = getattr(trainer.logger, "experiment", None)
        if not hasattr(writer, "add_image"):
            return
        if not self._described:
            writer.add_text("premise/definitions", f"penalty_kind (trains): **{self.mdp.penalty_kind}**\n\n"
                            + "\n".join(f"    {line}" for line in DEFINITIONS.splitlines()), step)
            self._described = True
        if self.figures:
            png = premise_figure(premise, self.mdp.penalty_kind)
            writer.add_image("premise/calibration", png_to_array(png), step, dataformats="HWC")


def figure_kinds(trained: str) -> list[str]:
    """The kinds the figure draws: the trained one and MOPO's two (its panels share axes, so a few kinds)."""
    return list(dict.fromkeys([trained, "aleatoric", "disagreement"]))


def lightning_epoch_step(trainer: L.Trainer, pl_module: L.LightningModule) -> int:
    """The x at which Lightning logs an epoch-end ``log_dict(on_epoch=True)`` from ``on_train_epoch_end``.

    Lightning logs epoch-end metrics at "batches that stepped - 1" (the epoch's last training batch). The
    SAC module does one update per batch, so that is ``sac_updates - 1``; without it (one optimizer,
    automatic optimisation) ``global_step - 1``.
    """
    updates = getattr(pl_module, "sac_updates", None)
    return max(int(updates if updates is not None else trainer.global_step) - 1, 0)


def premise_figure(premise: Premise, penalty_kind: str, bins: int = 10) -> bytes:
    """One PNG (Agg, in memory; one render of three panels, ``figure_kinds`` in each): the calibration of
    u (equal-count bins of u against the mean true error), u against the true error (at most
    ``SCATTER_POINTS`` rows per kind, log-log), and the penalised against the real H-step return per start
    state (at most ``SCATTER_POINTS``; below y = x the lower bound holds). y = x dashed in each."""
    from matplotlib.figure import Figure  # no pyplot: savefig renders with Agg, no global backend change
    from matplotlib.ticker import NullLocator

    s = premise.scalars
    fig = Figure(figsize=(13, 4.2), dpi=64)
    calibration, scatter, returns = fig.subplots(1, 3)
    real = premise.rows["return/real"].double()
    top, low, high, lo_r, hi_r = 0.0, np.inf, 0.0, np.inf, -np.inf
    # a palette: figure_kinds gives 2 or 3 kinds
    for kind, colour in zip(figure_kinds(penalty_kind), ("tab:blue", "tab:orange", "tab:green"), strict=False):
        u, err = premise.rows[f"{kind}/penalty"].double(), premise.rows[f"{kind}/error"].double()
        label = f"{kind}{' (trains)' if kind == penalty_kind else ''}"
        groups = [g for g in u.argsort().tensor_split(min(bins, max(u.numel(), 1))) if g.numel()]
        mu = np.array([float(u[g].mean()) for g in groups])
        me = np.array([float(err[g].mean()) for g in groups])
        calibration.plot(mu, me, "o-", color=colour, ms=4, label=f"{label}: spearman {s[f'{kind}/spearman']:.2f}, "
                         f"violated {s[f'{kind}/violation_rate']:.0%}")
        top = max(top, float(mu.max(initial=0)), float(me.max(initial=0)))
        pick = evenly_spaced(u.numel(), SCATTER_POINTS)
        x, y = u[pick].clamp_min(1e-8).numpy(), err[pick].clamp_min(1e-8).numpy()
        scatter.scatter(x, y, s=3, alpha=0.4, linewidths=0, color=colour, label=label)
        low, high = min(low, x.min(initial=1.0), y.min(initial=1.0)), max(high, x.max(initial=1.0), y.max(initial=1.0))
        pick = evenly_spaced(real.numel(), SCATTER_POINTS)
        penalized = premise.rows[f"return/{kind}/penalized"].double()[pick].numpy()
        returns.scatter(real[pick].numpy(), penalized, s=3, alpha=0.4, linewidths=0, color=colour,
                        label=f"{label}: gap {s[f'{kind}/return_gap']:.3g}, "
                              f"below real {s[f'{kind}/penalized_below_real']:.0%}")
        both = np.concatenate([real[pick].numpy(), penalized])
        both = both[np.isfinite(both)]
        if both.size:
            lo_r, hi_r = min(lo_r, float(both.min())), max(hi_r, float(both.max()))
    top = top * 1.05 or 1.0
    calibration.plot([0, top], [0, top], "k--", lw=0.8, label="error = u (the bound)")
    calibration.set(xlabel=f"penalty u(s, a): {bins} equal-count bins", ylabel="mean true one-step error",
                    title=f"calibration of u ({s['rows_measured']:.0f} real transitions)")
    scatter.plot([low, high], [low, high], "k--", lw=0.8)
    scatter.set(xscale="log", yscale="log", xlabel="penalty u(s, a)", ylabel="true one-step error",
                title="u against the true error, per transition")
    for axis in (scatter.xaxis, scatter.yaxis):  # minor log ticks cost most of the render, and say little
        axis.set_minor_locator(NullLocator())
    if np.isfinite(lo_r):
        returns.plot([lo_r, hi_r], [lo_r, hi_r], "k--", lw=0.8)
    returns.set(xlabel=f"real {s['rollout_length']:.0f}-step return",
                ylabel="model return - lambda_kind sum u",
                title=f"{s['rollout_length']:.0f}-step returns from {s['start_states']:.0f} visited states")
    for ax in (calibration, scatter, returns):
        ax.title.set_fontsize(10)
        ax.legend(fontsize=7, loc="upper left", markerscale=3 if ax is not calibration else 1)
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.13, top=0.92, wspace=0.22)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def png_to_array(png: bytes) -> np.ndarray:
    """PNG bytes -> uint8 [H, W, 3] for ``SummaryWriter.add_image``."""
    from matplotlib.image import imread

    image = imread(io.BytesIO(png), format="png")  # float [H, W, 4] in [0, 1]
    return (image[..., :3] * 255).round().astype(np.uint8)
