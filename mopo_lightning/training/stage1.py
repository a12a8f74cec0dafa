"""Stage 1 of a run: train the dynamics ensemble to early stopping, or load the one its settings made.

Sources: MOPO reference section 3 (ensemble training, holdout, member-wise early stopping, elites).

Every model carries its fingerprint (``dynamics/fingerprint.py``: dataset bytes, stage-1 data settings,
dynamics hyper-parameters, torch version, ``DYNAMICS_CODE_VERSION``), and is reused only on an exact match:
1. ``--dynamics_checkpoint PATH``: loaded; a different fingerprint refuses (``ConfigError``, one line).
2. ``<run_dir>/dynamics.ckpt``: the same.
3. the cache entry ``<cache>/<key>/dynamics.ckpt`` (default cache ``<run_root>/.dynamics_cache``): loaded
   and copied into the run directory. The copy (not a symlink) keeps a run directory whole when the
   cache is pruned; ~3x the weights' size per run.
4. otherwise the entry is trained under an exclusive ``flock`` on ``<entry>/lock``: a second process
   wanting the same model waits, then loads it.
Training is resumable: after every completed epoch ``<entry>/partial.ckpt`` (a full Lightning checkpoint:
weights, early stopping and member snapshots, Adam, loops, RNG states, bootstrap epoch, elapsed seconds)
is written atomically; a new start resumes from it with ``trainer.fit(ckpt_path=...)`` and ends with the
same weights as an uninterrupted run. SIGINT/SIGTERM finish the current epoch, save it and exit 128 + N.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, NoReturn

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.loggers import Logger

from mopo_lightning.callbacks.checkpointing import AtomicCheckpointIO, SignalStop, rng_state, set_rng_state
from mopo_lightning.callbacks.progress_bar import StageProgressBar
from mopo_lightning.dynamics.batches import BootstrapBatches
from mopo_lightning.dynamics.fingerprint import (
    dataset_sha256,
    dynamics_cache_dir,
    dynamics_fingerprint,
    exclusive_lock,
    fingerprint_key,
)
from mopo_lightning.dynamics.module import DynamicsModule, load_dynamics, time_limit
from mopo_lightning.files import atomic_path
from mopo_lightning.guards import CheckpointError, ConfigError, require_same
from mopo_lightning.machine import is_rank_zero, torch_threads
from mopo_lightning.model_env.penalties import measure_scales, scales_current
from mopo_lightning.training.datamodule import OfflineDataModule
from mopo_lightning.transitions import ACTION, OBSERVATION

FINAL, PARTIAL, LOCK = "dynamics.ckpt", "partial.ckpt", "lock"
PROGRESS_REFRESH_STEPS = 10  # stage-1 progress bar redraws (a step is ~20 ms on one CPU thread)
BOOTSTRAP_EPOCH = "dynamics_bootstrap_epoch"  # top-level checkpoint key: epochs the train loader began


def dynamics_summary(module: DynamicsModule) -> dict[str, Any]:
    """What results.json records of stage 1: holdout MSE (elites and members), elites, epochs."""
    best = module.early_stopping.best_mse
    elites = module.ensemble.elites
    return {
        "holdout_mse_elites": float(best[elites].mean()),
        "holdout_mse_members": [float(v) for v in best],
        "elites": [int(i) for i in elites],
        "epochs": int(module.early_stopping.epochs),
    }


class Stage1Checkpoint(SignalStop, Checkpoint):
    """``partial.ckpt`` after every completed epoch; SIGINT/SIGTERM stop after the epoch is saved.

    A ``Checkpoint`` runs after the module's epoch-end hooks, and the holdout scoring (early stopping,
    snapshots) runs before them, so each file holds a whole epoch. The last epoch writes no partial file:
    the final ``dynamics.ckpt`` follows it.
    """

    def __init__(self, path: Path, batches: BootstrapBatches) -> None:
        super().__init__()
        self.path, self.batches = path, batches
        self._pending_rng: dict[str, torch.Tensor] | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"rng": rng_state()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending_rng = state_dict["rng"]

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[BOOTSTRAP_EPOCH] = int(self.batches.epoch)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending_rng is not None:
            set_rng_state(self._pending_rng)
            self._pending_rng = None
        super().on_train_start(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.should_stop:
            return  # training ends now; the final dynamics.ckpt is written next
        trainer.save_checkpoint(self.path, weights_only=False)  # atomic (AtomicCheckpointIO)
        if self.signum is not None:
            self.exit_saved(int(pl_module.early_stopping.epochs))

    def exit_saved(self, epochs: int) -> NoReturn:
        """The one line of both stops: after an epoch's save, and after the last epoch's final model."""
        self.exit(f"stage 1 saved after {epochs} epochs; run the same command with --ckpt_path last to continue")


def _result(module: DynamicsModule, path: Path, key: str, loaded: bool) -> dict[str, Any]:
    return {**dynamics_summary(module), "seconds": module.train_seconds, "loaded": loaded,
            "time_capped": bool(module.time_capped),  # a report never pools capped and uncapped stage 1s
            "fingerprint": key, "fingerprint_fields": module.fingerprint, "checkpoint": str(path)}


def load_matching(path: Path, fingerprint: dict[str, Any], what: str) -> DynamicsModule:
    """Load ``path``; refuse (``ConfigError``, one line) unless it was made with ``fingerprint``.

    The fingerprint is compared before the weights load, so a model of other settings, another torch or
    ``DYNAMICS_CODE_VERSION`` (or of another ``FINGERPRINT_VERSION``, whose buffers may be named otherwise) is
    named as such, in one line naming the differing fields, not as a damaged file. A file that does not load
    (truncated, random bytes) is a ``CheckpointError`` naming it.
    """
    def corrupt(error: Exception) -> CheckpointError:
        return CheckpointError(f"{what} {path}: corrupt checkpoint ({type(error).__name__}); delete it to retrain")

    try:
        stored = torch.load(path, map_location="cpu", weights_only=True).get("dynamics_fingerprint")
    except Exception as error:  # what torch raises for a damaged file varies
        raise corrupt(error) from None
    if stored is None:
        raise ConfigError(f"{what} {path} records no fingerprint (not a stage-1 model); delete it to retrain")
    require_same(stored, fingerprint, ConfigError, f"{what} {path} was trained with other settings or code",
                 "delete it (or use another --run_name) to train a matching model")
    try:
        module = load_dynamics(path)
    except Exception as error:
        raise corrupt(error) from None
    return module


def dynamics_stage(datamodule: OfflineDataModule, num_threads: int | None = None,
                   **kwargs: Any) -> tuple[DynamicsModule, dict[str, Any]]:
    """Stage 1 under its own RNG stream, seeded by ``data.seed``, with ``num_threads`` torch CPU threads
    (None: as set; restored afterwards); see ``_dynamics_stage``.

    The ensemble's initial weights then depend only on what the fingerprint records (not on what was
    built before it, e.g. the SAC networks' sizes), so a cached model is exactly the one this run would
    train (a model cut by ``dynamics.max_time`` is never cached: it depends on the wall clock); and stage 2
    starts from the same global RNG state whether stage 1 trained, resumed or loaded.
    """
    with torch.random.fork_rng(devices=[]), torch_threads(num_threads):
        torch.manual_seed(int(datamodule.hparams.seed))
        module, info = _dynamics_stage(datamodule, **kwargs)
        return module, {**info, "penalty_scales": penalty_scales(module, datamodule)}


def penalty_scales(module: DynamicsModule, datamodule: OfflineDataModule) -> dict:
    """Every penalty kind's mean and 95th percentile on the data (``model_env.penalties.measure_scales``).

    Measured once per model, after training, and saved in its checkpoint (so the cache serves them); a model
    without current ones (older, or the definitions' version changed) is measured now, in memory.
    """
    if not scales_current(module.penalty_scales):
        real, ens = datamodule.rows(), module.ensemble
        module.penalty_scales = measure_scales(ens.predict, ens.elites, real[OBSERVATION], real[ACTION])
    return module.penalty_scales


def _dynamics_stage(
    datamodule: OfflineDataModule,
    *,
    hparams: dict[str, Any],
    run_dir: Path,
    checkpoint: str | None,
    trainer_kwargs: dict[str, Any],
    logger: Logger | None,
    cache_dir: str | Path | None = None,
) -> tuple[DynamicsModule, dict[str, Any]]:
    """Load the model these settings made (explicit, run directory, cache), else train it into the cache.

    Returns the module and the ``dynamics`` section of ``results.json``.
    """
    cache = dynamics_cache_dir(run_dir.parent, cache_dir)
    datamodule.setup()  # read the rows first: the fingerprint hashes the bytes that were read
    fingerprint = dynamics_fingerprint(
        dataset_sha256(datamodule.data.file(), cache, loaded=datamodule.loaded_file_state),
        datamodule.hparams, hparams
    )
    key = fingerprint_key(fingerprint)
    if checkpoint:
        path = Path(checkpoint)
        if not path.exists():
            raise CheckpointError(f"--dynamics_checkpoint {path}: no such file")
        module = load_matching(path, fingerprint, "--dynamics_checkpoint")
        capped = " (cut by dynamics.max_time: not reproducible)" if bool(module.time_capped) else ""
        print(f"dynamics: loaded {path} (fingerprint {key}){capped}")
        return module, _result(module, path, key, loaded=True)
    own = run_dir / FINAL
    if own.exists():
        module = load_matching(own, fingerprint, "dynamics:")
        print(f"dynamics: loaded {own} (fingerprint {key}; delete it to retrain)")
        return module, _result(module, own, key, loaded=True)
    entry = cache / key
    final = entry / FINAL
    trained: DynamicsModule | None = None
    if not final.exists():
        if is_rank_zero():  # DDP's other ranks start inside rank 0's fit: they must not wait
            with exclusive_lock(entry / LOCK, on_wait=lambda: print(
                    f"dynamics: waiting for another process training {entry}", flush=True)):
                if not final.exists():
                    trained = _train(datamodule, hparams, fingerprint, entry, run_dir, trainer_kwargs, logger)
        else:
            trained = _train(datamodule, hparams, fingerprint, entry, run_dir, trainer_kwargs, logger)
    if trained is None:
        module = load_matching(final, fingerprint, "dynamics cache entry")
        print(f"dynamics: loaded {final} from the cache (fingerprint {key}); stage 1 not retrained")
    else:
        module = trained
    if bool(module.time_capped):  # _train wrote it into the run directory alone
        print(f"dynamics: dynamics.max_time ({module.hparams.max_time}) ended training after "
              f"{int(module.early_stopping.epochs)} epochs: the model depends on this machine's speed, so it "
              f"is not reproducible; kept in {own} only, not in the cache", flush=True)
        return module, {**_result(module, own, key, loaded=False), "reproducible": False}
    if is_rank_zero():
        with atomic_path(own) as tmp:
            shutil.copyfile(final, tmp)
    return module, {**_result(module, own, key, loaded=trained is None), "cache_entry": str(final)}


def _train(
    datamodule: OfflineDataModule,
    hparams: dict[str, Any],
    fingerprint: dict[str, Any],
    entry: Path,
    run_dir: Path,
    trainer_kwargs: dict[str, Any],
    logger: Logger | None,
) -> DynamicsModule:
    """Train (or resume) the ensemble of ``entry``; write ``entry/dynamics.ckpt``, drop ``partial.ckpt``."""
    module = DynamicsModule(obs_dim=datamodule.obs_dim, act_dim=datamodule.act_dim, **hparams)
    module.fingerprint = fingerprint
    data = datamodule.dynamics_data(module.hparams.num_members)
    module.fit_normalizer(data.train_inputs)
    batches = data.train.dataset
    partial = entry / PARTIAL
    resume = None
    if partial.exists():
        state = torch.load(partial, map_location="cpu", weights_only=True)
        # The loader draws epoch k's order when its iterator starts, before any hook could set it.
        epochs = int(state["state_dict"]["early_stopping.epochs"])
        batches.epoch = int(state[BOOTSTRAP_EPOCH])
        resume = str(partial)
        print(f"dynamics: resuming {partial} after {epochs} epochs", flush=True)
    saver = Stage1Checkpoint(partial, batches)
    kwargs = dict(trainer_kwargs)
    callbacks: list[L.Callback] = [saver]
    if kwargs.get("enable_progress_bar", True) is not False:
        # Lightning's default bar redraws every step: ~0.6 ms of a ~20 ms step (benchmarks/fit_loop.py)
        callbacks.append(StageProgressBar("stage 1 (dynamics)", refresh_rate=PROGRESS_REFRESH_STEPS))
        kwargs["enable_progress_bar"] = True
    kwargs.setdefault("enable_model_summary", False)
    trainer = L.Trainer(
        **kwargs,
        # the module stops itself (member-wise early stopping, epoch cap); Lightning's timer caps the time
        max_epochs=module.hparams.max_epochs or -1,
        max_time=time_limit(module.hparams.max_time),  # our parse (the check that refuses bad values)
        num_sanity_val_steps=0,
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(run_dir),
    )
    trainer.fit(module, train_dataloaders=data.train, val_dataloaders=data.holdout, ckpt_path=resume)
    penalty_scales(module, datamodule)  # saved with the model: one trained model serves every penalty kind
    # A model cut by the wall clock goes into its run only: waiting processes must not load it from the cache.
    final = run_dir / FINAL if bool(module.time_capped) else entry / FINAL
    trainer.save_checkpoint(final, weights_only=True)  # weights, buffers, hparams, fingerprint, scales, seconds
    if is_rank_zero(trainer):
        partial.unlink(missing_ok=True)
    if saver.signum is not None:  # a signal during the last epoch: stage 1 is complete, stop before stage 2
        saver.exit_saved(int(module.early_stopping.epochs))
    return module
