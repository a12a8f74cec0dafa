"""Cost of the premise figures (``diagnostics/premise.py``) against the evaluation they measure.

One evaluation as MOPO runs it: 10 deterministic HalfCheetah episodes of 1000 steps (an untrained SAC actor,
transitions recorded), then ``premise_metrics`` on its 10,000 transitions with an untrained 7-member ensemble
(5 elites, 4 x 200) at the monitor's defaults: the one-step figures on 2,000 evenly spaced transitions,
H = 5 branched model returns from 1,000 of them (H batched calls, the first one reused), and the
nearest-neighbour distance of 500 of them against 50,000 dataset-sized states (random normal stand-ins:
the search costs the same). The figure (matplotlib, one render) is timed apart, first and steady-state render; so
is the premise on every transition (no caps) for comparison. Every penalty kind is measured by default
(``model_env/penalties.py``, 7 kinds);
the same call restricted to the trained kind (``kinds=("aleatoric",)``) gives the extra cost of measuring them
all; both are the median of ``REPEATS`` interleaved calls. Each kind's penalty alone on one rollout step's batch (50,000
rows, 7 members, the same sizes) is timed too: what training with it adds per model step. CPU, one torch
thread. Prints a table and writes ``benchmarks/results/premise.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from mopo_lightning.callbacks.evaluation import evaluate_policy
from mopo_lightning.callbacks.premise import premise_figure
from mopo_lightning.diagnostics.premise import DataReference, premise_metrics
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.penalties import PENALTY_KINDS, uncertainty_penalty
from mopo_lightning.policy.networks import TanhGaussianActor

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
HORIZON = 5
REPEATS = 9
ROLLOUT_ROWS = 50_000


def median_seconds(call, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    torch.manual_seed(0)
    task = get_task("halfcheetah")
    actor = TanhGaussianActor(task.obs_dim, task.act_dim).eval()
    def act(obs):
        return actor.sample(obs, deterministic=True)[0]

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
    mdp = ModelMDP(task.termination_fn, 1.0, "aleatoric", "sample", rollout_length=HORIZON)
    def measure(**kw):
        return premise_metrics(ensemble, result.transitions, mdp=mdp, policy=act, **kw)

    parts = {}
    premise = measure(reference=reference)  # warm-up, and the figure's input
    # interleaved, so the machine's drift over the minutes falls on both alike
    every, one = [], []
    for _ in range(REPEATS):
        every.append(median_seconds(lambda: measure(reference=reference), 1))
        one.append(median_seconds(lambda: measure(reference=reference, kinds=("aleatoric",)), 1))
    parts["premise_metrics"], parts["premise_one_kind"] = sorted(every)[REPEATS // 2], sorted(one)[REPEATS // 2]
    start = time.perf_counter()
    premise_figure(premise, mdp.penalty_kind)
    parts["figure_first"] = time.perf_counter() - start  # matplotlib's first render loads fonts
    start = time.perf_counter()
    premise_figure(premise, mdp.penalty_kind)
    parts["figure"] = time.perf_counter() - start  # every later evaluation's render
    start = time.perf_counter()
    measure(reference=None)
    parts["premise_without_distance"] = time.perf_counter() - start
    start = time.perf_counter()
    measure(reference=reference, max_rows=10**9, max_start_states=10**9)
    parts["premise_every_transition"] = time.perf_counter() - start
    gen = torch.Generator().manual_seed(0)
    rollout_obs = torch.randn(ROLLOUT_ROWS, task.obs_dim, generator=gen)
    mean, std = ensemble.predict(rollout_obs, torch.rand(ROLLOUT_ROWS, task.act_dim, generator=gen) * 2 - 1)
    point = mean[0]
    for kind in PENALTY_KINDS:
        parts[f"penalty_{kind}_rollout_step"] = median_seconds(
            lambda k=kind: uncertainty_penalty(mean, std, k, point, ensemble.elites))
    extra = parts["premise_metrics"] - parts["premise_one_kind"]
    rows = {
        "evaluation_seconds": t_plain,
        "evaluation_recording_seconds": t_eval,
        "recording_overhead_fraction": t_eval / t_plain - 1,
        "transitions": int(premise.scalars["transitions"]),
        "rows_measured": int(premise.scalars["rows_measured"]),
        "start_states": int(premise.scalars["start_states"]),
        "rollout_length": HORIZON,
        **{f"{k}_seconds": v for k, v in parts.items()},
        "premise_fraction_of_evaluation": parts["premise_metrics"] / t_plain,
        "penalty_kinds": len(PENALTY_KINDS),
        "all_kinds_extra_seconds": extra,
        "all_kinds_extra_fraction_of_premise": extra / parts["premise_one_kind"],
        "all_kinds_extra_fraction_of_evaluation": extra / t_plain,
        "premise_and_figure_fraction_of_evaluation": (parts["premise_metrics"] + parts["figure"]) / t_plain,
        "premise_every_transition_fraction_of_evaluation": parts["premise_every_transition"] / t_plain,
    }
    width = max(map(len, rows))
    for key, value in rows.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else f"{key:<{width}}  {value}")
    out = ROOT / "benchmarks" / "results" / "premise.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
