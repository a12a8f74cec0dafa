"""Size and save/load seconds of a SAC-stage checkpoint with a full h = 5 model buffer (1.25M rows).

The buffer is filled by 5 real rollouts of 50,000 x 5 steps through an (untrained) ensemble on
HalfCheetah, which never terminates, so it holds exactly 5 * 5 * 50,000 rows: the paper's size for h = 5.
The checkpoint holds what Lightning writes for our modules (weights, optimisers) plus the DataModule's
state (the buffer's filled rows, the sampler's generator), written by ``AtomicCheckpointIO``. Size and
times are also taken with 2 of the 5 rollouts in the buffer (a run's second epoch), where the file must hold only
the filled rows (before 764da9d it held the whole preallocated ring: 211 MB at any fill).
Prints a table and writes ``benchmarks/results/checkpoint.json``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # conftest, policy_data

from conftest import collected_dataset
from policy_data import policy_data

from mopo_lightning.callbacks.checkpointing import AtomicCheckpointIO
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.training.datamodule import OfflineDataModule

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    torch.manual_seed(0)
    data = OfflineDataModule(task="halfcheetah", path=str(collected_dataset("halfcheetah", 20_000, seed=0)), seed=0)
    real = data.rows()
    ensemble = GaussianEnsemble(data.obs_dim, data.act_dim)
    ensemble.fit_normalizer(torch.cat([real["observation"], real["action"]], -1))
    sac = SACModule(data.obs_dim, data.act_dim)
    settings = {"rollout_length": 5, "rollout_batch_size": 50_000, "model_retain_epochs": 5}
    dm = policy_data(data, ensemble, sac, **settings)
    figures: dict[str, float | int] = {}
    io = AtomicCheckpointIO()
    for filled in (2, 5):
        while len(dm.rollouts) < filled * 5 * 50_000:
            dm.rollouts.rollout(sac.policy_module())
        for _ in range(3):  # optimiser states exist
            sac.update(dm.sampler())
        checkpoint = {
            "state_dict": sac.state_dict(),
            "optimizer_states": [opt.state_dict() for opt in sac.standalone_optimizers()],
            "MixedDataModule": dm.state_dict(),
        }
        with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
            path = Path(tmp) / "last.ckpt"
            start = time.perf_counter()
            io.save_checkpoint(checkpoint, path)
            figures[f"{filled}_rollouts_save_s"] = time.perf_counter() - start
            figures[f"{filled}_rollouts_checkpoint_mb"] = path.stat().st_size / 2**20
            start = time.perf_counter()
            loaded = torch.load(path, weights_only=True)
            fresh = policy_data(data, ensemble, sac, **settings)
            fresh.load_state_dict(loaded["MixedDataModule"])
            figures[f"{filled}_rollouts_load_and_restore_s"] = time.perf_counter() - start
            assert len(fresh.rollouts) == len(dm.rollouts)
    figures = {"model_buffer_rows": len(dm.rollouts), **figures}
    print(f"checkpoint of the SAC stage, HalfCheetah sizes, 1 torch thread, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()[0]:.2f}, written under {ROOT}")
    for key, value in figures.items():
        print(f"{key:<36}{value:>12.3f}" if isinstance(value, float) else f"{key:<36}{value:>12}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
