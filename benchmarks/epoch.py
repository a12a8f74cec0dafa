"""One MOPO epoch on 1 CPU thread: 1 rollout (50,000 x h) + 1000 SAC updates on mixed batches + evaluation.

Worst case on purpose: HalfCheetah never terminates, so every rollout row runs all h steps and every
evaluation episode runs 1000 steps. The ensemble is untrained (its cost does not depend on its weights).
Prints a table and writes ``benchmarks/results/epoch.json``.

    python benchmarks/epoch.py [--rollout_length 5] [--updates 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # conftest, policy_data

from conftest import collected_dataset
from policy_data import policy_data

from mopo_lightning.callbacks.evaluation import evaluate_policy
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.training.datamodule import OfflineDataModule

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rollout_length", type=int, default=5)
    parser.add_argument("--rollout_batch_size", type=int, default=50_000)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--episodes", type=int, default=10)
    args = parser.parse_args()

    torch.manual_seed(0)
    path = collected_dataset("halfcheetah", 20_000, seed=0)
    data = OfflineDataModule(task="halfcheetah", path=str(path), seed=0)
    real = data.rows()
    ensemble = GaussianEnsemble(data.obs_dim, data.act_dim)
    ensemble.fit_normalizer(torch.cat([real["observation"], real["action"]], -1))
    sac = SACModule(data.obs_dim, data.act_dim)
    dm = policy_data(data, ensemble, sac, rollout_length=args.rollout_length,
                     rollout_batch_size=args.rollout_batch_size)
    policy = sac.policy_module()

    start = time.perf_counter()
    stats = dm.rollouts.rollout(policy).scalars
    rollout_s = time.perf_counter() - start

    for _ in range(20):  # warm-up
        sac.update(dm.sampler())
    start = time.perf_counter()
    for _ in range(args.updates):
        sac.update(dm.sampler())
    updates_s = time.perf_counter() - start

    start = time.perf_counter()
    result = evaluate_policy("halfcheetah", lambda obs: sac.act(obs, deterministic=True), range(args.episodes))
    eval_s = time.perf_counter() - start

    figures = {
        "threads": torch.get_num_threads(),
        "rollout_length": args.rollout_length,
        "rollout_batch_size": args.rollout_batch_size,
        "rollout_transitions": int(stats["rollout/transitions"]),
        "rollout_seconds": rollout_s,
        "sac_updates_per_second": args.updates / updates_s,
        "sac_seconds_per_1000_updates": updates_s * 1000 / args.updates,
        "eval_episodes": args.episodes,
        "eval_steps": int(result.lengths.sum()),
        "eval_seconds": eval_s,
        "epoch_seconds": rollout_s + updates_s * 1000 / args.updates + eval_s,
    }
    print(f"{'figure':<32}{'value':>12}")
    for key, value in figures.items():
        print(f"{key:<32}{value:>12.3f}" if isinstance(value, float) else f"{key:<32}{value:>12}")
    print(f"headline: one MOPO epoch (h={args.rollout_length}) = {figures['epoch_seconds']:.1f} s (target <= 25 s)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "epoch.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
