"""Shared test set-up: one torch thread, and small datasets collected from the real MuJoCo envs.

Datasets are made by the tests themselves with the project's collector and cached under
``tests/.data`` (git-ignored), keyed by every argument that shapes them.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)

DATA_DIR = Path(os.environ.get("MOPO_TEST_DATA", Path(__file__).parent / ".data"))


def collected_dataset(task: str, steps: int, seed: int = 0, policy: str = "random") -> Path:
    """Path of a D4RL-format file collected in the real env; collected once, then reused."""
    from mopo_lightning.data.collect import collect

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    path = DATA_DIR / f"{task}-{policy}-{steps}-s{seed}.hdf5"
    if not path.exists():
        tmp = path.with_suffix(".tmp.hdf5")
        collect(task, steps=steps, path=tmp, policy=policy, seed=seed)
        tmp.rename(path)
    return path


@pytest.fixture(scope="session")
def hopper_small() -> Path:
    """About 2,000 Hopper steps with a random policy: many terminals and a few timeouts."""
    return collected_dataset("hopper", 2_000, seed=0)
