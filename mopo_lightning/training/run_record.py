"""How a run stands, in ``results.json``: its planned budget, its status, and the line a user reads at the end.

A report trusts ``finished`` only: a run killed, failed or cut short says so (``status_detail``), and a
refused resume (bad checkpoint, changed config, bad data) leaves the record as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mopo_lightning.callbacks.checkpointing import EpochCheckpoint
from mopo_lightning.callbacks.results import RunResults
from mopo_lightning.data.errors import DatasetError, one_line
from mopo_lightning.data.summary import summarize
from mopo_lightning.guards import CheckpointError, ConfigError
from mopo_lightning.training.run_dir import RunDirectory

LIGHTNING_DEFAULT_EPOCHS = 1000  # Lightning's max_epochs when neither max_epochs nor max_steps is set


def planned_budget(stage: str, trainer: dict[str, Any], updates_per_epoch: int, every_n_evals: int) -> dict[str, Any]:
    """The run's budget as configured (``None``: unlimited), so a report can tell a finished run."""
    if stage == "dynamics":
        return {"stage": "dynamics"}
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if epochs is None and steps in (None, -1):
        epochs = LIGHTNING_DEFAULT_EPOCHS
    epochs = None if epochs is None or epochs < 0 or steps not in (None, -1) else int(epochs)
    every = max(1, int(every_n_evals or 1))
    return {"stage": "all", "epochs": epochs, "sac_updates": None if epochs is None else epochs * updates_per_epoch,
            "evaluations": None if epochs is None else epochs // every}


@contextmanager
def recorded(results: RunResults, run: RunDirectory, resuming: bool) -> Iterator[None]:
    """Record how a started run ends when an exception or signal ends it: ``stopped`` with the signal, or
    ``failed`` with the error. Bad input before the start leaves no trace; a refused resume changes nothing."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, Exception) as error:
        if not run.started or resuming and isinstance(error, (ConfigError, DatasetError, CheckpointError)):
            raise
        if isinstance(error, KeyboardInterrupt):
            results.set_status("stopped", signal=2)
        elif isinstance(error, SystemExit) and isinstance(error.code, int) and error.code > 128:
            results.set_status("stopped", signal=error.code - 128)
        elif not (isinstance(error, SystemExit) and error.code in (0, None)):
            message = one_line(error) or type(error).__name__
            results.set_status("failed", error=f"{type(error).__name__}: {message}"[:500])
        raise


def record_end(results: RunResults, sac_updates: int) -> None:
    """``finished`` when the planned SAC updates were all done; else ``stopped`` with the reason."""
    planned = results.data["planned"].get("sac_updates")
    if planned is None or sac_updates >= planned:
        results.set_status("finished")
    else:
        results.set_status("stopped", reason=f"the trainer ended at {sac_updates} of {planned} planned SAC "
                                              "updates (trainer.max_time, max_steps or a callback)")


def checkpoint_left(run_dir: Path) -> str:
    """The truth about what a stopped run left to resume from."""
    last = run_dir / "sac" / EpochCheckpoint.LAST
    if last.exists():
        return f"Its last good checkpoint is {last.resolve()}, written before the fault"
    if (run_dir / "dynamics.ckpt").exists():
        return "No SAC checkpoint was written yet; the trained dynamics model is kept"
    return "No checkpoint was written yet"


def closing_summary(results: RunResults, run_dir: Path, data_file: Path, task: Any, sac_updates: int) -> str:
    """What a user needs at the end: the score beside the data's own, updates, time per stage, paths."""
    data = results.data
    try:
        behaviour = summarize(data_file, task)
    except DatasetError:
        behaviour = None
    if task.has_reference_scores:
        own = "" if behaviour is None else (f" (the data's own: mean {behaviour['normalized_score']['mean']:.2f}, "
                                            f"best episode {behaviour['normalized_score']['max']:.2f})")
        score = data.get("final_normalized_score")
        headline = f"final normalised score {'n/a' if score is None else f'{score:.2f}'}{own}"
    else:
        own = "" if behaviour is None else (f" (the data's own: mean {behaviour['return']['mean']:.1f}, "
                                            f"best episode {behaviour['return']['max']:.1f})")
        ret = data.get("final_return")
        headline = f"final return {'n/a' if ret is None else f'{ret:.1f}'}{own}"
    seconds = data.get("seconds", {})
    return "\n".join([
        f"MOPO run {run_dir}: {headline} ({data.get('status')})",
        (f"  SAC updates {sac_updates}; wall time: stage 1 {seconds.get('dynamics', 0.0):.0f} s, "
         f"stage 2 {seconds.get('policy', 0.0):.0f} s"),
        f"  results:     {results.path}",
        f"  TensorBoard: tensorboard --logdir {run_dir / 'tensorboard'}",
    ])
