"""``mopo-lightning sweep SWEEP.yaml``: the trials of a sweep file on Ray Tune, resumable by running it again.

The spec, the trials and Ray are ``sweep/`` (``spec.py``, ``trial.py``, ``tuner.py``); this is the command.

Exit code: 0 when every trial finished; otherwise that of the first failed trial's ``fit`` (1-5, the
table in ``commands/cli.py``; 1 for a trial killed by a signal), 130 when the sweep itself was interrupted.
"""

from __future__ import annotations

import sys

from mopo_lightning.commands.cli import PROG, CommandExit
from mopo_lightning.sweep.tuner import run_sweep


def sweep(
    sweep_file: str,
    sweep_dir: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    cpus_per_trial: int = 1,
    gpus_per_trial: float = 0.0,
    max_concurrent_trials: int | None = None,
    dynamics_cache: str | None = None,
    poll_seconds: float = 2.0,
    dry_run: bool = False,
) -> None:
    """Run fit configs x named arms x a grid of seeds and hyper-parameters as trials on Ray Tune (resumable).

    Each trial is an ordinary run directory <sweep_dir>/<trial> made by `mopo-lightning fit` in a
    subprocess (log: <sweep_dir>/<trial>.log). Run the same command again after a stop: finished trials
    are skipped, unfinished ones resume from their last checkpoint.

    Args:
        sweep_file: the sweep YAML (conf/sweeps/*.yaml): `configs:` (or one `config:`), optional named
            `arms:` (e.g. MOPO and MBPO), fixed fit keys and a `grid:` of dotted fit keys to lists.
        sweep_dir: parent of the trials' run directories (default checkpoints/sweeps/<sweep file stem>).
        address: an existing Ray cluster (`auto` or HOST:PORT); default: start a local Ray.
        num_cpus: CPUs of the local Ray (default: those this process may use: its CPU affinity and
            container quota, not the host's core count).
        cpus_per_trial: CPUs Ray reserves per trial; fit's `--num_threads auto` is capped at as many threads.
        gpus_per_trial: GPUs per trial; fractions share a GPU (0.25: four trials per GPU).
        max_concurrent_trials: at most this many trials at once (default: as many as the resources allow).
        dynamics_cache: stage-1 cache shared by the trials (default <sweep_dir>/.dynamics_cache).
        poll_seconds: how often a trial reads its results.json for new evaluations.
        dry_run: print the trials and their fit commands without starting Ray.
    """
    outcome = run_sweep(sweep_file, sweep_dir, address, num_cpus, cpus_per_trial, gpus_per_trial,
                        max_concurrent_trials, dynamics_cache, poll_seconds, dry_run)
    fault = None if outcome is None else outcome.fault()
    if fault is not None:
        code, message = fault
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise CommandExit(code, message)
