"""Torch CPU threads per phase of a run: 1 against 2 (or ``--threads``), interleaved, medians.

Phases, each as the loop runs it:
- ``rollout``: one batched penalised ensemble step of ``--rows`` start states (``ModelRollouts.rollout``
  with h = 1: the policy on every row, the 7-member ``predict``, the penalty, the termination);
- ``dynamics``: one stage-1 step, forward + backward + fused Adam on [7, 256, in] (``benchmarks/dynamics.py``);
- ``sac``: one SAC update on a mixed 256-row batch (``SACModule.update``);
- ``evaluation``: ``--episodes`` HalfCheetah episodes of ``--episode_steps`` steps (``evaluate_policy``).
For each phase the thread counts alternate round by round (every count sees the same background load)
and the median wall and CPU seconds per call are kept. The wall figure decides: a phase gets more threads
only where its median wall time drops.

The benchmark runs under ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets a policy, as ``mopo-lightning``
does (``commands/cli.py``): OpenMP threads that wait for work sleep instead of spinning (``OMP_WAIT_POLICY=none``, an
invalid value, gives libgomp's default with a warning). Measured on this 2-core AMD EPYC (AVX-512), --rows 20000,
5 rounds, medians; the speed-up of 2 threads over 1 in wall time::

    waiting OpenMP threads      spin (default)   spin, GOMP_SPINCOUNT=10000   sleep (PASSIVE)
    idle machine (this benchmark alone)
      rollout                   1.71x            1.71x                        1.63x
      dynamics (stage-1 step)   1.51x            1.58x                        1.27x
      sac (one update)          1.43x            1.60x                        0.92x
      evaluation                1.01x            0.95x                        0.80x
    one busy process beside it (a Python busy loop)
      rollout                                    0.70x                        0.93x
      dynamics                                   0.43x                        0.92x
      sac                                        0.27x                        0.92x
      evaluation                                 0.63x                        0.92x

At 1 thread: rollout 575-627 ms, stage-1 step 21-24 ms, SAC update 10.3-11.4 ms, evaluation 189-208 ms.
Spinning, a second thread waits for a core that another process holds: with the machine busier (other jobs, load
4.2-4.6, 50,000 rows) the default policy made every phase 4x-10x slower at 2 threads (stage-1 step 33 -> 333 ms),
and a spinning worker keeps burning CPU after its phase goes back to 1 thread. Sleeping costs the idle machine
part of the gain (SAC and evaluation lose) and stays within ~8% of 1 thread when another process is busy. Hence
PASSIVE in the CLI, and ``--num_threads auto`` (``machine.AUTO_THREADS``): dynamics and rollout up to 4 threads,
SAC and evaluation 1. On a dedicated machine (nothing else running) spinning waiters with ``--threads.sac 2``
may pay: the SAC update gained 1.4-1.6x idle (``GOMP_SPINCOUNT=10000 OMP_WAIT_POLICY=none`` as measured here).

Prints a table and writes ``benchmarks/results/threads.json``.

    python benchmarks/threads.py [--threads 1 2] [--rounds 5] [--rows 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as the CLI sets it

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # conftest, policy_data

from conftest import collected_dataset
from policy_data import policy_data

from mopo_lightning.callbacks.evaluation import evaluate_policy
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.training.datamodule import OfflineDataModule

ROOT = Path(__file__).resolve().parents[1]


def phases(args: argparse.Namespace) -> dict[str, Callable[[], object]]:
    torch.manual_seed(0)
    data = OfflineDataModule(task="halfcheetah", path=str(collected_dataset("halfcheetah", 20_000, seed=0)), seed=0)
    real = data.rows()
    ensemble = GaussianEnsemble(data.obs_dim, data.act_dim)
    ensemble.fit_normalizer(torch.cat([real["observation"], real["action"]], -1))
    sac = SACModule(data.obs_dim, data.act_dim)
    sac.configure_optimizers()
    policy = sac.policy_module()
    dm = policy_data(data, ensemble, sac, rollout_length=1, rollout_batch_size=args.rows)
    dm.rollouts.rollout(policy)

    train = GaussianEnsemble(data.obs_dim, data.act_dim)
    x, y = torch.randn(7, 256, train.in_dim), torch.randn(7, 256, train.out_dim)
    opt = torch.optim.Adam(train.parameters(), lr=1e-3, fused=True)
    weights = list(train.weights)

    def dynamics_step() -> None:  # DynamicsModule.training_step's maths
        opt.zero_grad(set_to_none=True)
        nll, _ = train.nll_loss(x, y)
        (nll + 0.01 * train.logvar_bound_loss()).backward()
        train.add_weight_decay_grad(weights)
        train.weight_decay_value(weights)
        opt.step()

    batch = dm.sampler()
    return {
        "rollout": lambda: dm.rollouts.rollout(policy),
        "dynamics": dynamics_step,
        "sac": lambda: sac.update(batch),
        "evaluation": lambda: evaluate_policy("halfcheetah", lambda obs: sac.act(obs, deterministic=True),
                                              range(args.episodes), max_episode_steps=args.episode_steps,
                                              policy_batch=args.episodes),
    }


CALLS = {"rollout": 1, "dynamics": 20, "sac": 20, "evaluation": 1}


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--episode_steps", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    fns = phases(args)
    load_before = os.getloadavg()
    table: dict[str, dict[int, dict[str, float]]] = {}
    for name, fn in fns.items():
        n = CALLS[name]
        walls: dict[int, list[float]] = {t: [] for t in args.threads}
        cpus: dict[int, list[float]] = {t: [] for t in args.threads}
        for t in args.threads:  # warm-up at every count
            torch.set_num_threads(t)
            fn()
        for _ in range(args.rounds):
            for t in args.threads:
                torch.set_num_threads(t)
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(n):
                    fn()
                walls[t].append((time.perf_counter() - wall) / n)
                cpus[t].append((time.process_time() - cpu) / n)
        table[name] = {t: {"wall_s": statistics.median(walls[t]), "cpu_s": statistics.median(cpus[t])}
                       for t in args.threads}
    torch.set_num_threads(1)
    base = args.threads[0]
    print(f"{'phase':<12}{'threads':>8}{'wall ms':>12}{'CPU ms':>12}{'speed-up':>10}")
    for name, rows in table.items():
        for t, fig in rows.items():
            speedup = rows[base]["wall_s"] / fig["wall_s"]
            print(f"{name:<12}{t:>8}{fig['wall_s'] * 1e3:>12.2f}{fig['cpu_s'] * 1e3:>12.2f}{speedup:>10.2f}")
    result = {"cpu_count": os.cpu_count(), "omp_wait_policy": os.environ["OMP_WAIT_POLICY"],
              "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
              "rows": args.rows, "episodes": args.episodes, "episode_steps": args.episode_steps,
              "rounds": args.rounds, "phases": table}
    out = ROOT / "benchmarks" / "results" / "threads.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
