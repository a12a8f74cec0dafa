"""Stage 1 of a run: train the dynamics ensemble to early stopping, or load the one this run already has.

Sources: MOPO reference section 3 (ensemble training, holdout, member-wise early stopping, elites).
``<run_dir>/dynamics.ckpt`` (or an explicit ``--dynamics_checkpoint``) is loaded when it exists; otherwise
the ensemble is trained through a Lightning Trainer and saved atomically (weights, buffers, hparams).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import Logger

from mopo_lightning.dynamics.module import DynamicsModule, load_dynamics
from mopo_lightning.files import atomic_path
from mopo_lightning.training.datamodule import D4RLDataModule


def dynamics_summary(module: DynamicsModule) -> dict[str, Any]:
    """What results.json records of stage 1: holdout MSE (elites and members), elites, epochs."""
    best = module.early_stopping.best_mse
    elites = module.ensemble.elites
    return {
        "holdout_mse_elites": float(best[elites].mean()),
        "holdout_mse_members": [float(v) for v in best],
        "elites": [int(i) for i in elites],
        "epochs": int(module.early_stopping.num_updates),
    }


def dynamics_stage(
    datamodule: D4RLDataModule,
    *,
    hparams: dict[str, Any],
    run_dir: Path,
    checkpoint: str | None,
    trainer_kwargs: dict[str, Any],
    logger: Logger | None,
) -> tuple[DynamicsModule, dict[str, Any]]:
    """Load ``dynamics.ckpt`` when it exists, else train the ensemble and save it atomically.

    Returns the module and the ``dynamics`` section of ``results.json``.
    """
    path = Path(checkpoint or run_dir / "dynamics.ckpt")
    if path.exists():
        module = load_dynamics(path)
        print(f"dynamics: loaded {path} (delete it to retrain)")
        return module, {**dynamics_summary(module), "seconds": 0.0, "checkpoint": str(path)}
    if checkpoint:
        raise FileNotFoundError(f"--dynamics_checkpoint {path} does not exist")
    module = DynamicsModule(obs_dim=datamodule.obs_dim, act_dim=datamodule.act_dim, **hparams)
    data = datamodule.dynamics_data(module.hparams.num_members)
    module.fit_normalizer(data.train_inputs)
    trainer = L.Trainer(
        **trainer_kwargs,
        # the module stops itself (member-wise early stopping, epoch and time caps)
        max_epochs=module.hparams.max_epochs or -1,
        num_sanity_val_steps=0,
        logger=logger,
        enable_checkpointing=False,
        default_root_dir=str(run_dir),
    )
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=data.train, val_dataloaders=data.holdout)
    seconds = time.perf_counter() - start
    with atomic_path(path) as tmp:  # rank 0 writes; the other ranks' blocks write nothing
        trainer.save_checkpoint(tmp, weights_only=True)  # weights, buffers, hparams: no optimiser
    return module, {**dynamics_summary(module), "seconds": seconds, "checkpoint": str(path)}
