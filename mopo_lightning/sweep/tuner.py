"""The engine of ``mopo-lightning sweep`` (``commands/sweep.py``): the trials of a sweep file on Ray Tune, resumable
by running it again.

Ray is the engine: ``tune.Tuner(trainable, param_space={"trial": tune.grid_search(trials)})`` with one
CPU (``--cpus_per_trial``) and optionally a GPU fraction (``--gpus_per_trial``) per trial. By default the
command starts a local Ray itself (``ray.init(num_cpus=...)``, no dashboard, quiet); ``--address`` joins
an existing cluster instead (``auto`` or ``HOST:PORT``; every node must see the sweep directory and the
data at the same paths).

Resume: each start of the command builds a fresh Tuner over the whole grid; each trial decides from its
files what to do (``trial.trial_state``): finished trials are skipped and only report their recorded
evaluations, a run directory that holds a run resumes with ``--ckpt_path last``, the rest start. So
Ctrl-C, a kill or a lost node followed by the same command never retrains anything finished, and a
grid that grew (a new seed) runs only its new points. Tune's own records of each start are in
``<sweep dir>/tune/<start time>/`` (``ray.tune.ExperimentAnalysis`` or ``Tuner.restore`` read them).

How the sweep ended (``SweepOutcome.fault``) gives the command its exit code.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mopo_lightning.dynamics.fingerprint import dynamics_cache_dir
from mopo_lightning.sweep.spec import Trial, load_sweep
from mopo_lightning.sweep.trial import FINISHED, log_path, read_results, run_trial, trial_state

STARTED = {"finished": "skipped: finished before", "resume": "resumes from its last checkpoint", "new": "started"}


def trial_config(trial: Trial, cwd: Path, sweep_dir: str, poll_seconds: float, cpus: float = 1) -> dict[str, Any]:
    """What a worker needs to run one trial (plain data: it travels to Ray workers). ``cpus``: Ray's reservation,
    the cap of the trial's ``--num_threads auto``."""
    return {"name": trial.name, "fit_args": list(trial.fit_args), "cwd": str(cwd),
            "run_dir": str(Path(sweep_dir) / trial.name), "python": sys.executable, "poll_seconds": poll_seconds,
            "overrides": trial.overrides, "threads": max(1, int(cpus))}


def _start_ray(address: str | None, num_cpus: int | None) -> str:
    import ray

    kwargs: dict[str, Any] = {"logging_level": "ERROR", "log_to_driver": False, "include_dashboard": False}
    start = time.perf_counter()
    if address:
        ray.init(address=address, **kwargs)
        where = f"cluster at {address}"
    else:
        from mopo_lightning.machine import available_cpus

        ray.init(num_cpus=num_cpus or available_cpus(), **kwargs)  # os.cpu_count() ignores quotas and affinity
        where = "local"
    cpus = ray.cluster_resources().get("CPU", 0)
    gpus = ray.cluster_resources().get("GPU", 0)
    return f"Ray: {where}, {cpus:g} CPUs, {gpus:g} GPUs (started in {time.perf_counter() - start:.1f} s)"


def _progress_callback(total: int, advance: Any) -> Any:
    from ray import tune

    class SweepProgress(tune.Callback):
        """One line per trial state change; the overall bar counts trials that ended."""

        def __init__(self, total: int, advance: Any) -> None:
            self.total, self.advance = total, advance
            self.running: set[str] = set()
            self.done: set[str] = set()
            self.failed: set[str] = set()
            self.states: dict[str, str] = {}

        def __getstate__(self) -> dict[str, Any]:  # Tune pickles its callbacks; the bar stays here
            return {k: v for k, v in self.__dict__.items() if k != "advance"}

        def _line(self, trial: Any, text: str) -> None:
            counts = f"[{len(self.done) + len(self.failed)}/{self.total} ended, {len(self.running)} running, " \
                     f"{len(self.failed)} failed]"
            print(f"{counts} {trial.config['trial']['name']}: {text}", flush=True)

        def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            state = trial_state(trial.config["trial"])
            self.states[trial.trial_id] = state
            self.running.add(trial.trial_id)
            self._line(trial, STARTED[state])

        def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
            if "evaluation" not in result or self.states.get(trial.trial_id) == FINISHED:
                return
            expected = result["evaluations_expected"]
            score = result["normalized_score"]
            value = f"return {result['return_mean']:.1f}" if math.isnan(score) else f"score {score:.2f}"
            of = f"/{expected}" if expected > 0 else ""
            self._line(trial, f"evaluation {result['evaluation']}{of}: {value} "
                              f"({result['sac_updates']} SAC updates)")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.running.discard(trial.trial_id)
            self.done.add(trial.trial_id)
            if self.states.get(trial.trial_id) != FINISHED:
                self._line(trial, "finished")
            self.advance(1)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.running.discard(trial.trial_id)
            self.failed.add(trial.trial_id)
            code = (trial.last_result or {}).get("exit_code", "?")
            self._line(trial, f"FAILED (fit exit {code}); log {log_path(trial.config['trial'])}")
            self.advance(1)

    return SweepProgress(total, advance)


def _value(results: dict[str, Any]) -> str:
    score, ret = results.get("final_normalized_score"), results.get("final_return")
    if score is not None:
        return f"score {score:.2f}"
    return "-" if ret is None else f"return {ret:.1f}"


def summary(configs: list[dict[str, Any]], errors: dict[str, int], unfinished: set[str]) -> str:
    """Per trial: state, final value, dynamics trained or loaded, log; then the stage-1 count."""
    lines, trained, loaded, fingerprints = [], 0, 0, set()
    for trial in configs:
        results = read_results(trial)
        dynamics = results.get("dynamics") or {}
        if "loaded" in dynamics:
            trained += not dynamics["loaded"]
            loaded += bool(dynamics["loaded"])
            fingerprints.add(dynamics.get("fingerprint"))
        name = trial["name"]
        state = (f"FAILED (exit {errors[name]})" if name in errors else "unfinished" if name in unfinished
                 else "finished")
        dyn = "" if "loaded" not in dynamics else ("dynamics loaded" if dynamics["loaded"] else "dynamics trained")
        lines.append(f"  {name:<24} {state:<18} {_value(results):<16} {dyn:<17} {log_path(trial)}")
    lines.append(f"stage 1: {len(fingerprints)} dynamics model(s) for {len(configs)} trials; trained by {trained} "
                 f"trial run(s), loaded by {loaded} (results.json dynamics.loaded, as the trial's first start got it)")
    return "\n".join(lines)


@dataclass(frozen=True)
class SweepOutcome:
    """How a sweep's trials ended (``run_sweep``)."""

    trials: int
    errors: dict[str, int]
    """Failed trial -> its ``fit`` exit code, in the order Tune reported them."""
    unfinished: set[str]
    interrupted: bool
    first_log: Path | None
    """The log of the first failed trial."""

    def fault(self) -> tuple[int, str] | None:
        """The exit code and one-line message of a sweep that did not finish; None when every trial did. 130 when
        stopped (trials left unfinished), else the first failed trial's ``fit`` code (1-5; 1 for a signal)."""
        if self.interrupted or self.unfinished:
            return 130, f"sweep stopped with {len(self.unfinished)} unfinished trial(s); run the same command to resume"
        if self.errors:
            code = next(iter(self.errors.values()))
            failed = f"{len(self.errors)} of {self.trials} trials failed ({', '.join(self.errors)})"
            return code if 1 <= code <= 5 else 1, f"{failed}; see {self.first_log}"
        return None


def run_sweep(sweep_file: str, sweep_dir: str | None = None, address: str | None = None, num_cpus: int | None = None,
              cpus_per_trial: int = 1, gpus_per_trial: float = 0.0, max_concurrent_trials: int | None = None,
              dynamics_cache: str | None = None, poll_seconds: float = 2.0,
              dry_run: bool = False) -> SweepOutcome | None:
    """Print the sweep's trials, run them on Ray Tune and print the summary; None for a dry run (nothing runs).
    The arguments are ``mopo-lightning sweep``'s (``commands/sweep.py``)."""
    cwd = Path.cwd()
    spec = load_sweep(sweep_file)
    sweep_dir = sweep_dir or str(Path("checkpoints") / "sweeps" / Path(sweep_file).stem)
    cache = str(dynamics_cache_dir(sweep_dir, dynamics_cache))  # the trials' run root is the sweep directory
    trials = spec.trials(Path(sweep_dir), Path(cache))
    configs = [trial_config(t, cwd, sweep_dir, poll_seconds, cpus_per_trial) for t in trials]
    print(f"sweep {sweep_file}: {len(trials)} trials in {sweep_dir} (stage-1 cache {cache})")
    for trial, config in zip(trials, configs, strict=True):
        state = trial_state(config)
        note = "finished, skipped" if state == FINISHED else state
        print(f"  {trial.name} [{note}]: {trial.command(resume=state == 'resume')}")
    if dry_run:
        return None
    write_index(Path(sweep_dir), sweep_file, trials)
    errors, unfinished, interrupted = _tune(configs, sweep_dir, address, num_cpus, cpus_per_trial,
                                            gpus_per_trial, max_concurrent_trials)
    print(f"summary of {sweep_file} ({len(trials)} trials):")
    print(summary(configs, errors, unfinished))
    if not errors and not unfinished and not interrupted:
        print(f"report: mopo-lightning report {sweep_dir} --out {Path(sweep_dir) / 'report'}")
    else:
        names = sorted(set(errors) | unfinished)
        print(f"not finished: {', '.join(names)}; `report` leaves them out (--include_unfinished shows them, "
              "marked). Run the same sweep command to resume them.")
    first = next(iter(errors), None)
    first_log = None if first is None else log_path(next(c for c in configs if c["name"] == first))
    return SweepOutcome(len(trials), errors, unfinished, interrupted, first_log)


def write_index(sweep_dir: Path, sweep_file: str, trials: list[Trial]) -> None:
    """``<sweep dir>/sweep.json``: the sweep file's path, its text and that text's SHA-256 (what ran, even after
    the file changes), and every trial's overrides and fit command."""
    import hashlib
    import json

    from mopo_lightning.files import write_text_atomic

    raw = Path(sweep_file).read_bytes()
    index = {"sweep_file": sweep_file, "sweep_sha256": hashlib.sha256(raw).hexdigest(),
             "sweep_text": raw.decode("utf-8", errors="replace"),
             "trials": [{"name": t.name, "overrides": t.overrides, "command": t.command()} for t in trials]}
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(sweep_dir / "sweep.json", json.dumps(index, indent=1) + "\n")


def _tune(configs: list[dict[str, Any]], sweep_dir: str, address: str | None, num_cpus: int | None,
          cpus_per_trial: int, gpus_per_trial: float,
          max_concurrent_trials: int | None) -> tuple[dict[str, int], set[str], bool]:
    """Run the Tuner; return {failed trial: fit exit code}, the unfinished trials, and whether interrupted."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no Tune tables, our lines only
    import ray
    from ray import tune

    from mopo_lightning.progress import progress

    print(_start_ray(address, num_cpus), flush=True)
    resources = {"cpu": cpus_per_trial, **({"gpu": gpus_per_trial} if gpus_per_trial else {})}
    storage = (Path(sweep_dir) / "tune").resolve()
    interrupted = False
    try:
        with progress(len(configs), "trials ended") as advance:
            tuner = tune.Tuner(
                tune.with_resources(run_trial, resources),
                param_space={"trial": tune.grid_search(configs)},
                tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent_trials),
                run_config=tune.RunConfig(name=time.strftime("%Y%m%d-%H%M%S"), storage_path=str(storage),
                                          verbose=0, callbacks=[_progress_callback(len(configs), advance)],
                                          failure_config=tune.FailureConfig(max_failures=0)),
            )
            try:
                grid = tuner.fit()
            except KeyboardInterrupt:
                interrupted, grid = True, None
        errors: dict[str, int] = {}
        ended: set[str] = set()
        for result in grid or []:
            name = result.config["trial"]["name"]
            if result.error is not None:
                errors[name] = int((result.metrics or {}).get("exit_code", 1))
            elif trial_state(result.config["trial"]) == FINISHED:
                ended.add(name)
        unfinished = {c["name"] for c in configs} - ended - set(errors)
        print(f"Tune experiment: {grid.experiment_path if grid else storage} "
              "(ray.tune.ExperimentAnalysis / Tuner.restore read it)")
        return errors, unfinished, interrupted
    finally:
        ray.shutdown()
