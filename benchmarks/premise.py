"""Cost of the premise figures (``envs/premise.py``) against the evaluation they measure.

One evaluation as MOPO runs it: 10 deterministic HalfCheetah episodes of 1000 steps (an untrained SAC actor,
transitions recorded), then ``premise_metrics`` on its 10,000 transitions with an untrained 7-member ensemble
(5 elites, 4 x 200): the one-step figures, 10 model rollouts of 1000 steps, and the nearest-neighbour
distance against 50,000 dataset-sized states (random normal stand-ins: the search costs the same).
Figures (matplotlib) are timed apart. CPU, one torch thread. Prints a table and writes
``benchmarks/results/premise.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from mopo_lightning.callbacks.evaluation import evaluate_policy
from mopo_lightning.callbacks.premise import premise_figures
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.envs.premise import DataReference, PenaltySettings, premise_metrics
from mopo_lightning.policy.networks import TanhGaussianActor
from mopo_lightning.tasks import get_task

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    torch.manual_seed(0)
    task = get_task("halfcheetah")
    actor = TanhGaussianActor(task.obs_dim, task.act_dim).eval()
    act = lambda obs: actor.sample(obs, deterministic=True)[0]
    with torch.no_grad():
        start = time.perf_counter()
        plain = evaluate_policy(task, act, list(range(10)), seed=100_000)
        t_plain = time.perf_counter() - start
        start = time.perf_counter()
        result = evaluate_policy(task, act, list(range(10)), seed=100_000, record=True)
        t_eval = time.perf_counter() - start
    assert (plain.returns == result.returns).all()
    ensemble = GaussianEnsemble(task.obs_dim, task.act_dim).eval()
    obs = result.transitions["observation"]
    ensemble.fit_normalizer(torch.cat([obs, result.transitions["action"]], -1))
    reference = DataReference.from_observations(torch.randn(50_000, task.obs_dim))
    settings = PenaltySettings(1.0, "aleatoric", "sample")
    parts = {}
    start = time.perf_counter()
    premise = premise_metrics(ensemble, result.transitions, termination_fn=task.termination_fn, settings=settings,
                              policy=act, reference=reference)
    parts["premise_metrics"] = time.perf_counter() - start
    start = time.perf_counter()
    premise_figures(premise, settings)
    parts["figures"] = time.perf_counter() - start
    start = time.perf_counter()
    premise_metrics(ensemble, result.transitions, termination_fn=task.termination_fn, settings=settings,
                    policy=act, reference=None)
    parts["premise_without_distance"] = time.perf_counter() - start
    rows = {
        "evaluation_seconds": t_plain,
        "evaluation_recording_seconds": t_eval,
        "recording_overhead_fraction": t_eval / t_plain - 1,
        "transitions": int(premise.scalars["transitions"]),
        **{f"{k}_seconds": v for k, v in parts.items()},
        "premise_fraction_of_evaluation": parts["premise_metrics"] / t_plain,
        "premise_and_figures_fraction_of_evaluation": (parts["premise_metrics"] + parts["figures"]) / t_plain,
    }
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    out = ROOT / "benchmarks" / "results" / "premise.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
