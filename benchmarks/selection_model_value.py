"""Time of one model-based value estimate (``selection/model_value.py``) at real sizes, 1 torch thread.

Hopper (obs 11, act 3), a 7 x 4 x 200 ensemble with its 5 elites, a SAC actor (256 x 256) acting
deterministically, ``--starts`` start states near Hopper's reset state, ``--horizon`` steps. Weights are random (a
timing does not depend on their values), in two cases:
- ``alive``: the next state's mean head zeroed (s' = s, std ~5e-5), so no row terminates: every rollout runs the
  full horizon, the estimate's worst case;
- ``falling``: the same with the height's delta biased to -0.01 .. -0.04 per step (by member): every row leaves
  Hopper's healthy height (0.7) between steps 14 and 55, so the cost is what compaction leaves of the horizon.
Each (case, mode, compact_every) is timed ``--rounds`` times (median), after a 5-step warm-up; ``elite_sampled``
rolls out ``replicates`` = 5 copies of every start through all 7 members (``model_step``).

Prints the CPU (``lscpu``'s Model name), the load (``os.getloadavg``), a table, and writes
``benchmarks/results/selection_model_value.json``.

    python benchmarks/selection_model_value.py [--starts 400] [--horizon 1000] [--rounds 2] [--runs mean:10 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as the CLI sets it

import torch

from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.selection.model_value import ModelValueConfig, model_value

ROOT = Path(__file__).resolve().parents[1]
TASK = get_task("hopper")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    return next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                "unknown")


def ensemble(alive: bool) -> GaussianEnsemble:
    torch.manual_seed(0)
    model = GaussianEnsemble(TASK.obs_dim, TASK.act_dim, num_members=7, num_elites=5)
    model.fit_normalizer(torch.randn(10_000, model.in_dim) * 0.5)
    out = model.out_dim
    with torch.no_grad():  # the next state's mean s (+ a fall), std ~5e-5: healthy unless made to fall
        model.weights[-1][:, :, 1:out] = 0.0
        model.weights[-1][:, :, out + 1 :] = 0.0
        model.biases[-1][:, :, out + 1 :] = -30.0
        model.min_logvar.fill_(-20.0)
        if not alive:  # the height drops by 0.01 to 0.04 per step (by member): every row falls by step ~14-55
            model.biases[-1][:, :, 1] = -torch.linspace(0.01, 0.04, model.num_members)[:, None]
    model.elites.copy_(torch.tensor([3, 0, 6, 1, 4]))
    return model.eval().requires_grad_(False)


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=400)
    parser.add_argument("--horizon", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs", nargs="+", help="MODE:COMPACT_EVERY pairs",
                        default=["mean:0", "mean:1", "mean:10", "sample:10", "elite_sampled:10"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sac = SACModule(TASK.obs_dim, TASK.act_dim)
    def policy(obs):
        return sac.act(obs, True)

    starts = torch.zeros(args.starts, TASK.obs_dim)
    starts[:, 0] = 1.25  # Hopper's reset height, the rest near 0 (gymnasium's reset noise scale)
    starts += (torch.rand(starts.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.01
    header = {"cpu": cpu_name(), "load_before": os.getloadavg(), "threads": torch.get_num_threads(),
              "starts": args.starts, "horizon": args.horizon, "torch": torch.__version__}
    print(f"CPU {header['cpu']}; load {header['load_before'][0]:.2f}; {header['threads']} torch thread; "
          f"{args.starts} starts x {args.horizon} steps; ensemble 7 x 4 x 200 (5 elites); SAC actor 256 x 256")
    print(f"{'case':8s} {'mode':14s} {'compact':>7s} {'seconds':>8s} {'steps':>7s} {'return':>9s}")
    rows = []
    for case in ("alive", "falling"):
        model = ensemble(case == "alive")
        for run in args.runs:
            mode, every = run.split(":")[0], int(run.split(":")[1])
            config = ModelValueConfig(horizon=args.horizon, mode=mode, compact_every=every, replicates=5)
            model_value(model, policy, starts, TASK, replace(config, horizon=5))  # warm-up
            walls = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                result = model_value(model, policy, starts, TASK, config)
                walls.append(time.perf_counter() - start)
            row = {"case": case, "mode": mode, "compact_every": every, "wall_s": statistics.median(walls),
                   "walls": walls, "episode_steps": result.episode_steps, "return_mean": result.return_mean}
            rows.append(row)
            print(f"{case:8s} {mode:14s} {every:7d} {row['wall_s']:8.2f} {result.episode_steps:7.1f} "
                  f"{result.return_mean:9.2f}", flush=True)
    report = {**header, "load_after": os.getloadavg(), "rows": rows}
    out = ROOT / "benchmarks" / "results" / "selection_model_value.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"load after {report['load_after'][0]:.2f}; wrote {out.relative_to(ROOT)}")
    return report


if __name__ == "__main__":
    main()
