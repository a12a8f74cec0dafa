"""PremiseMonitor: MOPO's premise measured live at every evaluation (figures in ``envs/premise.py``).

It listens to ``MuJoCoEvaluation`` (which then records its episodes' real transitions) and, on those
transitions, measures the elite ensemble's true one-step error, its NLL, both penalties u(s, a), how well
each ranks the error (Spearman), how often the error exceeds it, the penalised and raw model returns of the
evaluation policy from the episodes' first states against the real return, and the visited states'
distance to the data. Logged under ``premise/`` (``premise/<kind>/...`` for each penalty kind), with a
calibration figure and a scatter of u against the error as TensorBoard images; the scalars also go into
the evaluation's entry of ``results.json`` (``premise``).

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

from mopo_lightning.callbacks.evaluation import EvalResult, MuJoCoEvaluation
from mopo_lightning.envs.premise import (
    EPISODE,
    PENALTY_KINDS,
    STEP,
    DataReference,
    PenaltySettings,
    Premise,
    premise_metrics,
)
from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD, TERMINATED, TRUNCATED

log = logging.getLogger(__name__)

DEFINITIONS = """\
Real transitions of each evaluation's episodes; y = [r, s' - s]; elites' mean prediction m.
- model_error_mean: mean of ||m - y||_2 over all 1 + O columns; model_error_mse: mean square.
- nll: -log of the elites' equal-weight Gaussian mixture density of y, nats per transition.
- <kind>/penalty_mean: u(s, a) as the model env computes it (all members, no lambda).
- <kind>/violation_rate: fraction of rows with error > u (aleatoric: error over all 1 + O columns;
  disagreement: over the O next-state columns). The bound MOPO assumes.
- <kind>/spearman: rank correlation of u and that error.
- model_return_raw / <kind>/model_return_penalized: the deterministic policy rolled through the model from
  each episode's first state for the real episode's length (or until the model terminates); the penalised
  return subtracts lambda u along the same trajectory. real_return: the evaluation's.
- return_gap = penalised - real (MOPO wants <= 0); return_gap_raw = raw - real.
- distance_to_data: nearest dataset observation (<= 50k subsample), in dataset-std units.
Unprefixed spearman, violation_rate, ... are those of the configured penalty kind."""

_COLUMNS = (OBSERVATION, ACTION, REWARD, NEXT_OBSERVATION, TERMINATED, TRUNCATED, EPISODE, STEP)


class PremiseMonitor(L.Callback):
    """Measure MOPO's premise on every ``every_n_evals``-th evaluation (module docstring)."""

    def __init__(self, every_n_evals: int = 1, max_data_states: int = 50_000, figures: bool = True,
                 seed: int = 0) -> None:
        """
        Args:
            every_n_evals: measure at every n-th MuJoCo evaluation (0: off).
            max_data_states: dataset observations searched for the nearest neighbour (a fixed subsample).
            figures: log the calibration and scatter figures as TensorBoard images (matplotlib).
            seed: seed of the model rollouts' generator and of the dataset subsample.
        """
        super().__init__()
        self.every_n_evals, self.max_data_states = every_n_evals, max_data_states
        self.figures, self.seed = figures, seed
        self.latest: Premise | None = None
        self._reference: DataReference | None = None
        self._evaluations = 0
        self._described = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        evaluation = next((c for c in trainer.callbacks if isinstance(c, MuJoCoEvaluation)), None)
        if evaluation is None or not self.every_n_evals:
            return
        if self not in evaluation.listeners:
            evaluation.listeners.append(self)

    # ------------------------------------------------------------------ the listener hook
    def on_evaluation(self, trainer: L.Trainer, pl_module: L.LightningModule, result: EvalResult,
                      entry: dict[str, Any]) -> None:
        self._evaluations += 1
        if self._evaluations % self.every_n_evals:
            return
        datamodule = getattr(trainer, "datamodule", None)
        ensemble = getattr(datamodule, "ensemble", None)
        data = self._gather(trainer, pl_module, result.transitions)
        if not trainer.is_global_zero or data is None:
            return
        if ensemble is None:
            log.info("premise: no dynamics attached to the DataModule; skipped")
            return
        hp = datamodule.hparams
        settings = PenaltySettings(hp.penalty_coef, hp.penalty_kind, hp.reward_mode)
        device = ensemble.elites.device
        if self._reference is None and getattr(datamodule, "real", None) is not None:
            self._reference = DataReference.from_observations(
                datamodule.real[OBSERVATION], self.max_data_states, self.seed)
        was_training = pl_module.training
        pl_module.eval()
        try:
            premise = premise_metrics(
                ensemble, data.to(device), termination_fn=datamodule.task_spec.termination_fn,
                settings=settings, policy=lambda obs: pl_module.act(obs.to(pl_module.device),
                                                                    deterministic=True).to(device),
                reference=self._reference, seed=self.seed)
        finally:
            pl_module.train(was_training)
        self.latest = premise
        entry["premise"] = {"penalty_kind": settings.kind, **premise.scalars}
        self._log(trainer, premise, settings, int(entry["sac_updates"]))

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
        parts = dict(zip(_COLUMNS, rows.split(widths, dim=-1)))
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

    # ------------------------------------------------------------------ TensorBoard
    def _log(self, trainer: L.Trainer, premise: Premise, settings: PenaltySettings, step: int) -> None:
        """At ``step`` = SAC updates, the x of the eval/* scalars (Lightning logs them per batch that stepped)."""
        logger = trainer.logger
        if logger is None:
            return
        logger.log_metrics({f"premise/{k}": v for k, v in premise.scalars.items()}, step=step)
        writer = getattr(logger, "experiment", None)
        if not hasattr(writer, "add_image"):
            return
        if not self._described:
            writer.add_text("premise/definitions", f"penalty_kind (trains): **{settings.kind}**\n\n"
                            + "\n".join(f"    {line}" for line in DEFINITIONS.splitlines()), step)
            self._described = True
        if self.figures:
            for name, png in premise_figures(premise, settings).items():
                writer.add_image(f"premise/{name}", png_to_array(png), step, dataformats="HWC")


def premise_figures(premise: Premise, settings: PenaltySettings, bins: int = 10) -> dict[str, bytes]:
    """PNG bytes: ``calibration`` (binned u against the mean true error, with counts, per kind) and
    ``scatter`` (u against the error, log-log, per kind). Matplotlib's Agg backend, in memory."""
    from matplotlib.figure import Figure  # no pyplot: savefig renders with Agg, no global backend change

    out = {}
    for name in ("calibration", "scatter"):
        fig = Figure(figsize=(9, 4), dpi=80)
        axes = fig.subplots(1, len(PENALTY_KINDS))
        for ax, kind in zip(axes, PENALTY_KINDS):
            u = premise.rows[f"{kind}/penalty"].double()
            err = premise.rows[f"{kind}/error"].double()
            figures = premise.scalars
            title = (f"{kind}{' (trains)' if kind == settings.kind else ''}: spearman "
                     f"{figures[f'{kind}/spearman']:.2f}, violated {figures[f'{kind}/violation_rate']:.0%}")
            _calibration(ax, u, err, bins) if name == "calibration" else _scatter(ax, u, err)
            ax.set_title(title, fontsize=9)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        out[name] = buffer.getvalue()
    return out


def _calibration(ax: Any, u: torch.Tensor, err: torch.Tensor, bins: int) -> None:
    """Equal-count bins of u: mean u against mean true error, counts written over the points; y = x."""
    order = u.argsort()
    groups = [g for g in order.tensor_split(min(bins, max(u.numel(), 1))) if g.numel()]
    mu = np.array([float(u[g].mean()) for g in groups])
    me = np.array([float(err[g].mean()) for g in groups])
    ax.plot(mu, me, "o-", label="mean true error per bin")
    for x, y, g in zip(mu, me, groups):
        ax.annotate(str(g.numel()), (x, y), textcoords="offset points", xytext=(0, 5), fontsize=7, ha="center")
    top = max(float(mu.max(initial=0)), float(me.max(initial=0))) * 1.05 or 1.0
    ax.plot([0, top], [0, top], "k--", lw=0.8, label="error = u (the bound)")
    ax.set_xlabel("penalty u(s, a), binned (equal counts)")
    ax.set_ylabel("true one-step error")
    ax.legend(fontsize=7)


def _scatter(ax: Any, u: torch.Tensor, err: torch.Tensor) -> None:
    """Every transition: u against the true error, log-log; y = x."""
    x, y = u.clamp_min(1e-8).numpy(), err.clamp_min(1e-8).numpy()
    ax.scatter(x, y, s=2, alpha=0.3)
    lo, hi = min(x.min(initial=1e-8), y.min(initial=1e-8)), max(x.max(initial=1.0), y.max(initial=1.0))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("penalty u(s, a)")
    ax.set_ylabel("true one-step error")


def png_to_array(png: bytes) -> np.ndarray:
    """PNG bytes -> uint8 [H, W, 3] for ``SummaryWriter.add_image``."""
    from matplotlib.image import imread

    image = imread(io.BytesIO(png), format="png")  # float [H, W, 4] in [0, 1]
    return (image[..., :3] * 255).round().astype(np.uint8)
