"""Offline selection: estimate every candidate without the real env, choose per dataset, and only then, where
online scores exist, measure the choices (DOPE: Spearman, regret@1 and @3, MAE).

Order of work, which is the guarantee: (1) the candidates and their datasets (``candidates.py``); (2) per dataset,
its rows, episode start states and evaluation model (``evaluation_model.py``); (3) every estimate of every
candidate (``estimators.py``); (4) the choice per dataset by ``choose_by`` (and what each other estimator would
have chosen); (5) the online scores, read from results.json for the first time, and the metrics. No real env is
built at any step (``tests/integration/test_select.py`` makes ``gymnasium.make`` raise throughout).

A dataset is the report's (``analysis.cells.datasets``: its bytes and its task), so runs of one file under two
paths are one dataset and two files of one name are two.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mopo_lightning.analysis import cells as cl
from mopo_lightning.analysis.ood import dataset_file
from mopo_lightning.analysis.runs import Run
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.progress import progress
from mopo_lightning.selection.candidates import Candidate, Kind, candidates_of, runs_of
from mopo_lightning.selection.estimators import ESTIMATORS, Estimator, EstimatorConfig, estimate
from mopo_lightning.selection.evaluation_model import EVALUATION_SEED, EvaluationModel, evaluation_model
from mopo_lightning.selection.fqe import start_states
from mopo_lightning.selection.metrics import selection_metrics
from mopo_lightning.selection.store import EstimateStore

REGRET_KS = (1, 3)
"""The k of regret@k reported (DOPE's regret@1 and the issue's regret@3)."""


@dataclass(frozen=True)
class SelectConfig:
    """``select``'s knobs."""

    estimators: EstimatorConfig = field(default_factory=EstimatorConfig)
    choose_by: Estimator = "eval_mean"
    """The estimate the choice maximises (``estimators.ESTIMATORS``); docs/selection.md measures each."""
    candidates: Kind = "final"
    """``final``: each run's final policy; ``epochs``: every SAC checkpoint the runs kept."""
    evaluation_seed: int = EVALUATION_SEED
    """``data.seed`` of the evaluation model, one per dataset (a seed none of the candidates' models used)."""
    dynamics_cache: str | None = None
    """Where the evaluation model is looked up or trained (None: the cache the runs' stage 1 used)."""
    last: int = 1
    """A final candidate's online score (read after choosing): the mean of its run's last K evaluations."""
    store: str | None = None
    """A JSON-lines file of estimates already made (``store.py``): reused when their inputs are unchanged, new ones
    appended as they are made. None: nothing kept."""

    def __post_init__(self) -> None:
        if self.choose_by not in ESTIMATORS:
            raise ValueError(f"choose_by must be one of {', '.join(ESTIMATORS)}, not {self.choose_by!r}")
        if self.choose_by.startswith("eval") and not self.estimators.evaluation_model:
            raise ValueError(f"choose_by {self.choose_by} needs the evaluation model")
        if self.choose_by == "fqe" and self.estimators.fqe.num_updates < 1:
            raise ValueError("choose_by fqe needs --estimators.fqe.num_updates > 0")
        if self.last < 1:
            raise ValueError("--last must be >= 1")


def load_rows(run: Run):
    """The rows of the run's dataset in their recorded order, with the project's loader (``OfflineDataset``)."""
    from mopo_lightning.data.dataset import OfflineDataset

    path = dataset_file(run)
    kw = {"mode": run.identity.get("data.mode") or "transitions", "max_rows": run.identity.get("data.max_rows")}
    if path is not None:
        return OfflineDataset(run.task, path=str(path), **kw).load()
    return OfflineDataset(run.task, dataset=run.dataset, **kw).load()


def load_policy(checkpoint: Path):
    """The deterministic policy (tanh of the mean) of a SAC checkpoint."""
    from mopo_lightning.policy.sac import SACModule

    sac = SACModule.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True).eval()
    return lambda obs: sac.act(obs, True)


def choose(rows: list[dict[str, Any]], by: str) -> dict[str, str]:
    """Each group's candidate with the highest ``by`` estimate (ties: the first); reads no online score."""
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        value = row["estimates"].get(by)
        if value is not None and (row["group"] not in best or value > best[row["group"]]["estimates"][by]):
            best[row["group"]] = row
    return {group: row["candidate"] for group, row in best.items()}


def measure(rows: list[dict[str, Any]], choices: dict[str, dict[str, str]]) -> dict[str, Any]:
    """After every choice: per estimator, the DOPE metrics and each choice's online score beside the best."""
    out: dict[str, Any] = {}
    online = {row["candidate"]: row["online"] for row in rows}
    for name, chosen in choices.items():
        groups: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
        for row in rows:
            if row["online"] is not None and row["estimates"].get(name) is not None:
                groups[row["group"]][0].append(row["estimates"][name])
                groups[row["group"]][1].append(row["online"])
        if not groups:
            continue
        metrics = selection_metrics(groups, ks=REGRET_KS).as_dict()
        for group in metrics["groups"]:
            truths = groups[group["group"]][1]
            group["chosen_online"] = online.get(chosen.get(group["group"], ""))
            group["best_online"], group["worst_online"] = max(truths), min(truths)
        out[name] = metrics
    return out


def select_runs(paths: Sequence[str | Path], config: SelectConfig = SelectConfig(),
                quiet: bool = False) -> dict[str, Any]:
    """The selection of the runs under ``paths`` as a JSON-ready dict (module docstring)."""
    runs, left_out = runs_of(paths)
    if not runs:
        why = "; ".join(f"{run}: {reason}" for run, reason in left_out[:3])
        raise ValueError(f"no finished run to select from under {', '.join(map(str, paths))}"
                         + (f" ({len(left_out)} left out: {why})" if left_out else ""))
    datasets = cl.datasets(runs)
    by_dataset: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_dataset[(get_task(run.task).name, run.data_key)].append(run)
    pool = candidates_of(runs, config.candidates)
    rows: list[dict[str, Any]] = []
    models: dict[str, dict[str, Any]] = {}
    store = EstimateStore(config.store)
    with progress(len(pool), "estimating candidates", quiet=quiet, unit="policies") as advance:
        for (task_name, data_key), members in by_dataset.items():
            group = f"{task_name} {datasets[data_key].label}"
            mine = [c for c in pool if c.run in members]
            try:
                data_rows = load_rows(members[0])
                starts = start_states(data_rows)
            except (OSError, ValueError, KeyError) as err:  # the data moved or changed: its candidates fail
                rows += [{**_row(c, group), "error": f"dataset: {type(err).__name__}: {err}"} for c in mine]
                advance(len(mine))
                continue
            evaluation: EvaluationModel | None = None
            if config.estimators.evaluation_model:
                try:
                    evaluation = evaluation_model(members, config.evaluation_seed, config.dynamics_cache, quiet)
                    models[group] = evaluation.as_dict()
                except (OSError, ValueError) as err:
                    models[group] = {"error": f"{type(err).__name__}: {err}"}
            task = get_task(members[0].task)
            own_models: dict[Path, Any] = {}
            for candidate in mine:
                rows.append(_estimate_one(candidate, group, task, data_rows, starts, evaluation, own_models,
                                          config, store))
                advance(1)
    estimators = [name for name in ESTIMATORS if any(name in r["estimates"] for r in rows)]
    choices = {name: choose(rows, name) for name in estimators}
    chosen = choices.get(config.choose_by, {})
    for row in rows:
        row["chosen"] = chosen.get(row["group"]) == row["candidate"]
    # Only now: the online scores.
    by_name = {c.name: c for c in pool}
    for row in rows:
        row["online"] = by_name[row["candidate"]].online(config.last)
    return {"config": asdict(config), "estimators": {n: ESTIMATORS[n] for n in estimators},
            "evaluation_models": models, "candidates": rows, "chosen": chosen,
            "choices": choices, "metrics": measure(rows, choices), "reused_estimates": sum(
                bool(r.get("reused")) for r in rows),
            "left_out": [{"run": run, "reason": why} for run, why in left_out]}


def _row(candidate: Candidate, group: str) -> dict[str, Any]:
    return {"candidate": candidate.name, "run": str(candidate.run.path.parent), "epoch": candidate.epoch,
            "method": candidate.method, "seed": candidate.run.seed, "task": candidate.run.task, "group": group,
            "estimates": {}}


def _estimate_one(candidate: Candidate, group: str, task, data_rows, starts: torch.Tensor,
                  evaluation: EvaluationModel | None, own_models: dict[Path, Any], config: SelectConfig,
                  store: EstimateStore) -> dict[str, Any]:
    from mopo_lightning.dynamics.module import load_dynamics

    row = _row(candidate, group)
    try:
        run_dir = candidate.run.path.parent
        own = run_dir / "dynamics.ckpt"
        for path in (candidate.checkpoint, own):
            if not path.exists():
                raise FileNotFoundError(f"no {path.relative_to(run_dir)}")
        model = None if evaluation is None else {"fingerprint": evaluation.fingerprint, "seed": evaluation.seed}
        key = store.key(candidate.checkpoint, own, model, asdict(config.estimators))
        if (kept := store.get(key)) is not None:
            row["estimates"], row["details"] = kept
            row["reused"] = True
            return row
        if run_dir not in own_models:
            own_models.clear()  # one run's model at a time: its candidates are consecutive
            own_models[run_dir] = load_dynamics(own).ensemble.eval()
        policy = load_policy(candidate.checkpoint)
        scores, details = estimate(policy, own_models[run_dir], None if evaluation is None else
                                   evaluation.module.ensemble, starts, task, config.estimators, data_rows)
        row["estimates"], row["details"] = scores, details
        store.put(key, scores, details)
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        row["error"] = f"{type(err).__name__}: {err}"
    return row
