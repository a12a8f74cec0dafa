"""Offline selection among finished runs (issue 32, first cut): estimate each run's final policy without the real
env, pick the best estimate per dataset, and only then, where online scores exist, measure the pick (DOPE).

Candidates: the finished runs under the given paths (``analysis.runs.find_runs``/``load_run``, the report's
``select``, ``assign_methods`` and ``deduplicate``). Per candidate: its final SAC policy (``sac/last.ckpt``,
deterministic actions), its own dynamics model (``dynamics.ckpt``), the rows of the dataset it trained on and their
episode start states. Estimators: the model-based value (``model_value.model_value``) in the run's own model, the
OPTIMISTIC variant (the policy was trained against that model, so its errors favour the policy); with
``fqe_updates`` > 0 also FQE (``fqe.evaluate_policy``) as a second column. The estimate is the D4RL normalised score
where the task has reference scores, else the return; the choice per dataset (the report's identity: the content
hash, ``Run.data_key``, and the task) is the highest estimate mean. No real env is built and no online score is
read until every choice is made.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mopo_lightning.analysis import cells as cl
from mopo_lightning.analysis.ood import dataset_file
from mopo_lightning.analysis.runs import Run, assign_methods, deduplicate, find_runs, load_run, method_label
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.progress import progress
from mopo_lightning.report import Settings
from mopo_lightning.report import select as finished_runs
from mopo_lightning.selection.fqe import FQEConfig, evaluate_policy, return_scale, start_states
from mopo_lightning.selection.metrics import selection_metrics
from mopo_lightning.selection.model_value import ModelValueConfig, model_value

METHOD = "model value (own model, optimistic)"
"""The label of the estimate: the run's own model, which its policy was trained against (an optimistic variant)."""


@dataclass(frozen=True)
class SelectConfig:
    """The estimators' knobs."""

    model_value: ModelValueConfig = field(default_factory=ModelValueConfig)
    """The model-based estimate's configuration (its default: member means, elites, 1000 steps)."""
    fqe_updates: int = 0
    """FQE's gradient updates per candidate, a second column (0: no FQE)."""
    last: int = 1
    """A run's online score (read after choosing): the mean of its last K evaluations."""


def load_rows(run: Run):
    """The rows of the run's dataset in their recorded order, with the project's loader (``OfflineDataset``)."""
    from mopo_lightning.data.dataset import OfflineDataset

    path = dataset_file(run)
    kw = {"mode": run.identity.get("data.mode") or "transitions", "max_rows": run.identity.get("data.max_rows")}
    if path is not None:
        return OfflineDataset(run.task, path=str(path), **kw).load()
    return OfflineDataset(run.task, dataset=run.dataset, **kw).load()


def estimate(run: Run, config: SelectConfig) -> dict[str, Any]:
    """One candidate's estimates (module docstring); raises ``OSError``/``ValueError`` when it cannot be made."""
    from mopo_lightning.dynamics.module import load_dynamics
    from mopo_lightning.policy.sac import SACModule

    run_dir = run.path.parent
    for name in ("sac/last.ckpt", "dynamics.ckpt"):
        if not (run_dir / name).exists():
            raise FileNotFoundError(f"no {name}")
    task = get_task(run.task)
    sac = SACModule.load_from_checkpoint(run_dir / "sac" / "last.ckpt", map_location="cpu", weights_only=True).eval()
    ensemble = load_dynamics(run_dir / "dynamics.ckpt").ensemble

    def policy(obs: torch.Tensor) -> torch.Tensor:
        return sac.act(obs, True)

    rows = load_rows(run)
    starts = start_states(rows)
    mv = model_value(ensemble, policy, starts, task, config.model_value)
    scored = mv.normalized_mean is not None
    out = {"estimate": mv.normalized_mean if scored else mv.return_mean,
           "estimate_min": mv.normalized_min if scored else mv.return_min,
           "estimate_std": mv.normalized_std if scored else mv.return_std,
           "unit": "normalized_score" if scored else "return", "model_value": mv.as_dict()}
    if config.fqe_updates > 0:
        fqe_config = FQEConfig(num_updates=config.fqe_updates)
        scale = return_scale(fqe_config.gamma, config.model_value.horizon)
        fqe = evaluate_policy(rows, policy, fqe_config, starts, task, scale)
        out["fqe"] = fqe.as_dict()
        out["fqe_estimate"] = fqe.normalized_score if scored else fqe.value * scale
    return out


def candidates(paths: Sequence[str | Path]) -> tuple[list[Run], list[tuple[str, str]]]:
    """The finished runs under ``paths`` (one per configuration and seed, the newest), and the ones left out."""
    found, missing = find_runs(list(paths))
    runs, left_out = finished_runs([load_run(p) for p in found], Settings())
    runs, dropped = deduplicate(assign_methods(runs))
    left_out += missing + [(str(r.path.parent), "repeats the configuration and seed of a newer run") for r in dropped]
    return runs, left_out


def choose(rows: list[dict[str, Any]]) -> None:
    """Mark each group's highest estimate ``chosen`` (ties: the first); reads no online score."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        row["chosen"] = False
        if row.get("estimate") is not None:
            groups[row["group"]].append(row)
    for members in groups.values():
        max(members, key=lambda r: r["estimate"])["chosen"] = True


def measure(rows: list[dict[str, Any]], runs: dict[str, Run], last: int) -> dict[str, Any] | None:
    """After ``choose``: each candidate's online score (where results.json has one) and the DOPE metrics."""
    groups: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    for row in rows:
        row["online"] = runs[row["run"]].value(last)
        if row["online"] is not None and row.get("estimate") is not None:
            groups[row["group"]][0].append(row["estimate"])
            groups[row["group"]][1].append(row["online"])
    return selection_metrics(groups).as_dict() if groups else None


def select_runs(paths: Sequence[str | Path], config: SelectConfig = SelectConfig(),
                quiet: bool = False) -> dict[str, Any]:
    """The selection of ``paths`` as a JSON-ready dict (module docstring)."""
    runs, left_out = candidates(paths)
    data = cl.datasets(runs)
    rows: list[dict[str, Any]] = []
    with progress(len(runs), "estimating candidates", quiet=quiet, unit="runs") as advance:
        for run in runs:
            label = data[run.data_key].label
            row = {"run": str(run.path.parent), "method": method_label(run.method), "task": run.task,
                   "dataset": label, "group": f"{get_task(run.task).name} {label}"}
            try:
                row |= estimate(run, config)
            except (OSError, ValueError, RuntimeError, KeyError) as err:
                row |= {"estimate": None, "error": f"{type(err).__name__}: {err}"}
            rows.append(row)
            advance(1)
    choose(rows)
    metrics = measure(rows, {str(r.path.parent): r for r in runs}, config.last)
    return {"estimator": {"method": METHOD, "variant": "optimistic: the policy was trained against this model",
                          "model_value": asdict(config.model_value), "fqe_updates": config.fqe_updates},
            "candidates": rows, "chosen": {r["group"]: r["run"] for r in rows if r["chosen"]},
            "metrics": metrics, "left_out": [{"run": run, "reason": why} for run, why in left_out]}


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def markdown(selection: dict[str, Any]) -> str:
    """The selection as Markdown: a table per dataset, then the DOPE metrics where online scores exist."""
    lines = [f"# Offline selection: {selection['estimator']['method']}", "",
             "Estimate: mean across the model's members [min across members]; "
             "optimistic (each policy was trained against its own model).", ""]
    fqe = selection["estimator"]["fqe_updates"] > 0
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in selection["candidates"]:
        groups[row["group"]].append(row)
    for group, rows in groups.items():
        lines += [f"## {group}", "", "| candidate run | method | estimate mean [min] |" + (" FQE |" if fqe else "")
                  + " chosen |", "|---|---|---|" + ("---|" if fqe else "") + "---|"]
        for row in rows:
            cell = (f"{_number(row['estimate'])} [{_number(row['estimate_min'])}]" if row["estimate"] is not None
                    else f"failed: {row['error']}")
            lines.append(f"| {row['run']} | {row['method']} | {cell} |"
                         + (f" {_number(row.get('fqe_estimate'))} |" if fqe else "")
                         + (" **chosen** |" if row["chosen"] else " |"))
        lines.append("")
    if metrics := selection["metrics"]:
        lines += ["## Against the online scores (read after choosing)", "",
                  "| dataset | n | Spearman | regret@1 | MAE |", "|---|---|---|---|---|"]
        for g in metrics["groups"]:
            lines.append(f"| {g['group']} | {g['n']} | {_number(g['spearman'])} | {_number(g['regret']['1'])} "
                         f"| {_number(g['mean_absolute_error'])} |")
        pooled = [_number(metrics[k]["mean"]) for k in ("spearman", "mean_absolute_error")]
        lines.append(f"| pooled ({metrics['n_groups']} datasets) | | {pooled[0]} "
                     f"| {_number(metrics['regret']['1']['mean'])} | {pooled[1]} |")
        lines.append("")
    if selection["left_out"]:
        lines += [f"Left out: {len(selection['left_out'])} run(s): "
                  + "; ".join(f"{r['run']}: {r['reason']}" for r in selection["left_out"]), ""]
    return "\n".join(lines)


def write(selection: dict[str, Any], out: str | Path) -> None:
    """select.json and select.md in ``out``."""
    from mopo_lightning.files import write_text_atomic

    Path(out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out) / "select.json", json.dumps(selection, indent=1) + "\n")
    write_text_atomic(Path(out) / "select.md", markdown(selection) + "\n")
