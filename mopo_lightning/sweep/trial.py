"""One trial on Ray Tune: an ordinary ``fit`` in a subprocess, its evaluations reported to Tune as they land.

The trainable runs ``python -m mopo_lightning.commands.cli fit <trial's args>`` in the sweep's working directory,
its stdout and stderr appended to ``<run dir>.log``, and polls ``<run dir>/results.json``: every new
evaluation becomes one ``tune.report`` ({``evaluation``, ``evaluations_expected``, ``sac_updates``,
``return_mean``, ``normalized_score``}; the score is NaN for variant tasks without D4RL references).

State of a trial, decided from its files alone (``trial_state``), so that any start of the sweep, fresh or
after a kill, does the right thing:

- ``finished``: ``<run dir>.done.json`` exists and records the same fit arguments, and the run's
  ``results.json`` says ``finished``; the trial is not re-run, its recorded evaluations are reported to Tune
  again (so Tune's results hold every trial);
- ``resume``: the run directory holds a run (``training/run_dir.RunDirectory.holds_run``): ``fit`` runs
  with ``--ckpt_path last`` and continues from ``sac/last.ckpt`` (stage 1 from its partial checkpoint);
- ``new``: ``fit`` starts the run.

The marker is written only after ``fit`` exits 0. The fit process gets SIGTERM if the worker that started
it dies (``PR_SET_PDEATHSIG``), which ``fit`` answers by checkpointing and stopping: a killed sweep leaves
no orphan training.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mopo_lightning.files import write_text_atomic
from mopo_lightning.training.run_dir import RunDirectory

FINISHED, RESUME, NEW = "finished", "resume", "new"


class TrialFailed(RuntimeError):
    """``fit`` exited with a non-zero code; the message names the log."""


def run_dir(trial: dict[str, Any]) -> Path:
    return Path(trial["cwd"]) / trial["run_dir"]


def trial_env(trial: dict[str, Any]) -> dict[str, str]:
    """The fit's environment: ``OMP_NUM_THREADS`` caps its ``--num_threads auto`` at the CPUs Ray reserved."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(trial["threads"])}


def log_path(trial: dict[str, Any]) -> Path:
    return run_dir(trial).with_name(run_dir(trial).name + ".log")


def marker_path(trial: dict[str, Any]) -> Path:
    return run_dir(trial).with_name(run_dir(trial).name + ".done.json")


def trial_state(trial: dict[str, Any]) -> str:
    """``finished``, ``resume`` or ``new`` (see the module docstring)."""
    marker = marker_path(trial)
    if marker.is_file() and read_results(trial).get("status") == FINISHED:  # not a run replaced since
        try:
            if json.loads(marker.read_text()).get("fit_args") == list(trial["fit_args"]):
                return FINISHED
        except ValueError:
            pass  # a damaged marker: the run directory decides
    return RESUME if RunDirectory(run_dir(trial)).holds_run() else NEW


def read_results(trial: dict[str, Any]) -> dict[str, Any]:
    try:
        return json.loads((run_dir(trial) / "results.json").read_text())
    except (OSError, ValueError):
        return {}


def expected_evaluations(trial: dict[str, Any]) -> int | None:
    """The evaluations the trial's run planned (``results.json`` ``planned``), if known."""
    planned = read_results(trial).get("planned") or {}
    value = planned.get("evaluations")
    return int(value) if isinstance(value, int) else None


def metrics(index: int, evaluation: dict[str, Any], expected: int | None, state: str) -> dict[str, Any]:
    """What one evaluation reports to Tune."""
    score = evaluation.get("normalized_score")
    return {"evaluation": index, "evaluations_expected": expected or -1, "sac_updates": evaluation["sac_updates"],
            "return_mean": evaluation["return_mean"],
            "normalized_score": math.nan if score is None else float(score), "trial_state": state}


_LIBC = ctypes.CDLL("libc.so.6", use_errno=True) if sys.platform.startswith("linux") else None
"""Loaded here, in the parent: the child between fork and exec only calls ``prctl``."""


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it dies (Linux ``prctl``)."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def run_trial(config: dict[str, Any]) -> None:
    """The Tune trainable: ``config["trial"]`` is ``command.trial_config``'s dict."""
    from ray import tune

    trial = config["trial"]
    state = trial_state(trial)
    reported = 0  # sac_updates of the newest evaluation reported

    def report_new(results: dict[str, Any]) -> None:
        nonlocal reported
        evals = results.get("evaluations") or []
        expected = expected_evaluations(trial)
        for index, evaluation in enumerate(evals, start=1):
            if evaluation["sac_updates"] > reported:
                tune.report(metrics(index, evaluation, expected, state))
                reported = evaluation["sac_updates"]

    if state == FINISHED:
        report_new(read_results(trial))
        return
    args = [*trial["fit_args"], *(["--ckpt_path", "last"] if state == RESUME else [])]
    log = log_path(trial)
    log.parent.mkdir(parents=True, exist_ok=True)
    import ray

    context = ray.get_runtime_context()
    with open(log, "a") as out:
        out.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} sweep trial {trial['name']} ({state}) on Ray node "
                  f"{context.get_node_id()} of the cluster at {context.gcs_address}: "
                  f"mopo-lightning fit {' '.join(args)}\n")
        out.flush()
        proc = subprocess.Popen([trial["python"], "-m", "mopo_lightning.commands.cli", "fit", *args], cwd=trial["cwd"],
                                stdout=out, stderr=subprocess.STDOUT, env=trial_env(trial),
                                preexec_fn=_die_with_parent)  # one prctl call, no locks
        try:
            while proc.poll() is None:
                report_new(read_results(trial))
                time.sleep(trial["poll_seconds"])
        finally:
            if proc.poll() is None:  # Tune stopped this trial: let fit checkpoint and stop
                proc.terminate()
                proc.wait()
    results = read_results(trial)
    report_new(results)
    if proc.returncode != 0:
        tune.report({"exit_code": proc.returncode, "trial_state": state})
        raise TrialFailed(f"fit exited with {proc.returncode}; see {log}")
    write_text_atomic(marker_path(trial), json.dumps({
        "fit_args": list(trial["fit_args"]), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "final_normalized_score": results.get("final_normalized_score"),
        "final_return": results.get("final_return")}, indent=1) + "\n")
