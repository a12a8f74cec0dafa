"""How a run stands, in ``results.json``: its planned budget, its status, and the line a user reads at the end.

A report trusts ``finished`` only: a run killed, failed or cut short says so (``status_detail``), and a
refused resume (bad checkpoint, changed config, bad data) leaves the record as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Timer

from mopo_lightning.callbacks.checkpointing import EpochCheckpoint
from mopo_lightning.callbacks.results import RunResults
from mopo_lightning.data.errors import DatasetError, one_line
from mopo_lightning.data.summary import summarize
from mopo_lightning.guards import CheckpointError, ConfigError
from mopo_lightning.training.run_dir import RunDirectory

LIGHTNING_DEFAULT_EPOCHS = 1000  # Lightning's max_epochs when neither max_epochs, max_steps nor max_time is set
OPTIMIZER_STEPS_PER_UPDATE = 3
"""``trainer.global_step`` counts optimizer steps: a SAC update steps three (``SACModule.update``: critics, actor,
temperature), so ``trainer.max_steps`` = N ends the run after ceil(N / 3) updates."""


def planned_budget(stage: str, trainer: dict[str, Any], updates_per_epoch: int, every_n_evals: int) -> dict[str, Any]:
    """The run's budget as configured, so a report can tell a finished run (``None``: unlimited).

    ``epochs`` (``trainer.max_epochs``, Lightning's default filled in), ``sac_updates`` (the first limit of
    epochs and ``max_steps``), ``evaluations`` (one per ``every_n_evals`` epochs begun, the last one cut short
    by ``max_steps`` included: Lightning ends that epoch with its end hooks); ``max_steps`` and ``max_time``
    (as configured) when set. A ``max_time`` limit is no number of updates: a run it cuts is ``stopped``.
    """
    if stage == "dynamics":
        return {"stage": "dynamics"}
    epochs, steps, max_time = trainer.get("max_epochs"), trainer.get("max_steps"), trainer.get("max_time")
    steps = None if steps is None or steps < 0 else int(steps)
    if epochs is None:  # Lightning's default (lightning.pytorch.loops.utilities._parse_loop_limits)
        epochs = LIGHTNING_DEFAULT_EPOCHS if steps is None and max_time is None else -1
    epochs = None if epochs < 0 else int(epochs)
    limits = [epochs * updates_per_epoch if epochs is not None else None,
              -(-steps // OPTIMIZER_STEPS_PER_UPDATE) if steps is not None else None]
    updates = min((u for u in limits if u is not None), default=None)
    every = max(1, int(every_n_evals or 1))
    evaluations = None if updates is None else -(-updates // max(1, updates_per_epoch)) // every
    return {"stage": "all", "epochs": epochs, "sac_updates": updates, "evaluations": evaluations,
            **({"max_steps": steps} if steps is not None else {}),
            **({"max_time": _time_text(max_time)} if max_time is not None else {})}


def _time_text(max_time: Any) -> Any:
    """``trainer.max_time`` as JSON: ``DD:HH:MM:SS`` and mappings as given, a ``timedelta`` in that form."""
    if isinstance(max_time, timedelta):
        minutes, seconds = divmod(int(max_time.total_seconds()), 60)
        hours, minutes = divmod(minutes, 60)
        days, hours = divmod(hours, 24)
        return f"{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}"
    return dict(max_time) if isinstance(max_time, dict) else str(max_time)


@contextmanager
def recorded(results: RunResults, run: RunDirectory, resuming: bool) -> Iterator[None]:
    """Record how a started run ends when an exception or signal ends it: ``stopped`` with the signal, or
    ``failed`` with the error. Bad input before the start leaves no trace; a refused resume changes nothing,
    nor does anything before training resumes in a run that had finished (its numbers stand)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, Exception) as error:
        refused = isinstance(error, (ConfigError, DatasetError, CheckpointError)) or results.finished_before()
        if not run.started or resuming and refused:
            raise
        if isinstance(error, KeyboardInterrupt):
            results.set_status("stopped", signal=2)
        elif isinstance(error, SystemExit) and isinstance(error.code, int) and error.code > 128:
            results.set_status("stopped", signal=error.code - 128)
        elif not (isinstance(error, SystemExit) and error.code in (0, None)):
            message = one_line(error) or type(error).__name__
            results.set_status("failed", error=f"{type(error).__name__}: {message}"[:500])
        raise


def record_end(results: RunResults, trainer: L.Trainer, sac_updates: int) -> None:
    """How SAC's ``trainer.fit`` ended: ``finished`` when the planned SAC updates were all done; else ``stopped``
    with the reason (``trainer.max_time``, or a callback that stopped the trainer).

    A resume that trained nothing (its checkpoint already at or past the budget: Lightning skips the loop)
    leaves an ended record as it was: status, detail and the budget the run was run for. A record still
    ``running`` (killed after its last checkpoint) is judged against its recorded budget.
    """
    if not results.trained and results.ended_before is not None:
        results.set_status(**results.ended_before)
        return
    planned = results.data["planned"]
    budget = planned.get("sac_updates")
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = None if timer is None else timer.time_remaining()
    if budget is not None and sac_updates >= budget:
        results.set_status("finished")
    elif remaining is not None and remaining <= 0:
        results.set_status("stopped", reason=f"trainer.max_time ({planned.get('max_time')}) ended the run at "
                                             f"{sac_updates} of {budget or 'unlimited'} planned SAC updates")
    else:
        results.set_status("stopped", reason=f"the trainer ended at {sac_updates} of {budget or 'unlimited'} "
                                             "planned SAC updates (a callback stopped it)")


def record_stage1_end(results: RunResults) -> None:
    """A ``--stage dynamics`` run ends: ``finished`` when its record plans stage 1 alone; a resumed full run's
    record keeps its status (a stage-1 resume finishes none of its SAC budget)."""
    if results.data["planned"].get("stage") == "dynamics":
        results.set_status("finished")
    elif results.ended_before is not None:
        results.set_status(**results.ended_before)


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
