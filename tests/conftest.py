"""Shared test set-up: one torch thread, and small datasets collected from the real MuJoCo envs.

``OMP_NUM_THREADS=1`` (set here before torch loads, inherited by the CLI subprocesses) caps ``fit``'s default
``--num_threads auto`` at one thread per phase (``machine.thread_cap``): pytest-xdist runs two workers on a
2-core machine, and two OpenMP threads per fit there spin-wait for a core the other worker holds (up to 10x
slower). A test that means to use more threads passes them explicitly.

Datasets are made by the tests themselves with the project's collector and cached under
``tests/.data`` (git-ignored), keyed by every argument that shapes them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"

import pytest
import torch

torch.set_num_threads(1)

DATA_DIR = Path(os.environ.get("MOPO_TEST_DATA", Path(__file__).parent / ".data"))


@contextmanager
def made_once(name: str) -> Iterator[None]:
    """Hold ``name``'s lock while a cached file is checked and made: pytest-xdist workers that need the same
    dataset wait for the first one instead of writing it twice (a writer clears stale temporaries)."""
    import fcntl

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    with open(DATA_DIR / f".{name.replace('/', '_')}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def collected_dataset(
    task: str, steps: int, seed: int = 0, policy: str = "random", max_episode_steps: int | None = None
) -> Path:
    """Path of a D4RL-format file collected in the real env; collected once, then reused.

    ``max_episode_steps`` shortens the time limit (so that small files hold timeouts).
    """
    from mopo_lightning.collection.collect import collect

    DATA_DIR.mkdir(parents=True, exist_ok=True)
    limit = "" if max_episode_steps is None else f"-t{max_episode_steps}"
    path = DATA_DIR / f"{task}-{policy}-{steps}-s{seed}{limit}.hdf5"
    with made_once(path.name):
        if not path.exists():
            # collect() itself writes through a temporary file renamed into place.
            collect(task, steps=steps, path=path, policy=policy, seed=seed, max_episode_steps=max_episode_steps,
                    quiet=True)
    return path


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for a timing-sensitive test, restored afterwards (a test before it may have set more)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_tiny_ensemble(data, task, iters: int, holdout: int):
    """A 5-member 2 x 64 ensemble trained ``iters`` bootstrap steps on real transitions, the 3 members best on the
    last ``holdout`` rows as elites: a real (small) model of real MuJoCo data in seconds."""
    from mopo_lightning.dynamics.ensemble import GaussianEnsemble
    from mopo_lightning.transitions import ACTION, NEXT_OBSERVATION, OBSERVATION, REWARD

    torch.manual_seed(0)
    model = GaussianEnsemble(task.obs_dim, task.act_dim, num_members=5, num_elites=3, hidden_dim=64, num_layers=2,
                             weight_decays=(2.5e-5, 5e-5, 1e-4))
    inputs = torch.cat([data[OBSERVATION], data[ACTION]], -1)
    targets = torch.cat([data[REWARD], data[NEXT_OBSERVATION] - data[OBSERVATION]], -1)
    model.fit_normalizer(inputs)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(iters):
        idx = torch.randint(inputs.shape[0], (5, 256), generator=gen)  # one bootstrap batch per member
        nll, _ = model.nll_loss(inputs[idx], targets[idx])
        optimizer.zero_grad()
        (nll + 0.01 * model.logvar_bound_loss()).backward()
        optimizer.step()
    model.eval().requires_grad_(False)
    with torch.no_grad():
        mse = (model(inputs[-holdout:])[0] - targets[-holdout:]).square().mean(dim=(1, 2))
    model.elites.copy_(mse.argsort()[:3])
    return model


@pytest.fixture(scope="session")
def hopper_small() -> Path:
    """About 2,000 Hopper steps with a random policy: many terminals and a few timeouts."""
    return collected_dataset("hopper", 2_000, seed=0)


@pytest.fixture(scope="session")
def hopper_random_20k() -> Path:
    """20,000 random Hopper steps: the quickstart's data, which MOPO must learn from."""
    return collected_dataset("hopper", 20_000, seed=0)


@pytest.fixture(scope="session")
def hopper_flags() -> Path:
    """1,000 random Hopper steps with a 25-step time limit: both terminals and timeouts."""
    return collected_dataset("hopper", 1_000, seed=0, max_episode_steps=25)


@pytest.fixture(scope="session")
def halfcheetah_2100() -> Path:
    """2,100 random HalfCheetah steps, default 1000-step limit: timeouts at rows 999 and 1999."""
    return collected_dataset("halfcheetah", 2_100, seed=0)


@pytest.fixture(scope="session")
def dataset_factory():
    """``collected_dataset`` itself, for tests that need datasets of their own choosing."""
    return collected_dataset


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``mopo-lightning ARGS`` in a subprocess, as a user would; fail with its output if it fails."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "mopo_lightning.commands.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def read_hdf5(path: str | Path) -> dict:
    """Every dataset of an HDF5 file, by its full name (``infos/qpos``, ...)."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


MINARI_DIR = DATA_DIR / "minari"
"""The tests' Minari store; ``minari_dataset`` points ``MINARI_DATASETS_PATH`` there (subprocesses inherit it)."""


def minari_dataset(
    task: str,
    steps: int,
    seed: int = 0,
    policy: str = "random",
    max_episode_steps: int | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    env_kwargs: dict | None = None,
    name: str | None = None,
) -> str:
    """Id of a real Minari dataset written by ``minari`` itself from the project's collector in the real
    MuJoCo env (``collect(format="minari")``), in ``tests/.data/minari``; written once, then reused.

    ``env_kwargs`` change the env (and so its recorded spec), e.g. Ant-v5 without contact forces; ``name``
    gives the id's name part (default: built from every argument that shapes the data).
    """
    os.environ["MINARI_DATASETS_PATH"] = str(MINARI_DIR)
    robot = task.split("-")[0]
    if name is None:
        limit = "" if max_episode_steps is None else f"-t{max_episode_steps}"
        refs = "" if ref_max_score is None else f"-r{ref_min_score:g}_{ref_max_score:g}".replace(".", "p")
        kw = "" if not env_kwargs else "-k" + "_".join(sorted(env_kwargs))
        name = f"{policy}-{steps}-s{seed}{limit}{refs}{kw}".replace("-inf", "minf")
    dataset_id = f"test/{robot}/{name}-v0"
    with made_once(dataset_id):
        if not (MINARI_DIR / dataset_id / "data" / "metadata.json").is_file():
            _collect_minari(task, steps, seed, policy, max_episode_steps, ref_min_score, ref_max_score, env_kwargs,
                            dataset_id)
    return dataset_id


def _collect_minari(task: str, steps: int, seed: int, policy: str, max_episode_steps: int | None,
                    ref_min_score: float | None, ref_max_score: float | None, env_kwargs: dict | None,
                    dataset_id: str) -> None:
    import dataclasses

    from mopo_lightning.collection.collect import collect
    from mopo_lightning.envs.tasks import get_task

    spec = get_task(task)
    if env_kwargs:
        import gymnasium as gym

        probe = gym.make(spec.env_id, **env_kwargs)
        spec = dataclasses.replace(spec, obs_dim=probe.observation_space.shape[0], env_kwargs=dict(env_kwargs))
        probe.close()
    collect(spec, steps=steps, policy=policy, seed=seed, max_episode_steps=max_episode_steps, quiet=True,
            format="minari", dataset_id=dataset_id, ref_min_score=ref_min_score, ref_max_score=ref_max_score)


@pytest.fixture(scope="session")
def minari_factory():
    """``minari_dataset`` itself: tests create the real Minari datasets they need."""
    return minari_dataset


def random_sac_batches(n: int, obs_dim: int, act_dim: int, batch: int, seed: int = 0) -> list:
    """``n`` seeded random SAC batches (transition keys, 20% terminal rows), for unit tests of the update."""
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    return [
        TensorDict(
            {
                "observation": torch.randn(batch, obs_dim, generator=g),
                "action": torch.rand(batch, act_dim, generator=g) * 2 - 1,
                ("next", "observation"): torch.randn(batch, obs_dim, generator=g),
                ("next", "reward"): torch.randn(batch, 1, generator=g),
                ("next", "terminated"): torch.rand(batch, 1, generator=g) < 0.2,
            },
            batch_size=[batch],
        )
        for _ in range(n)
    ]


def fit_run(root: Path, name: str, args: list[str], scores: list[float | None], returns: list[float] | None = None,
            status: str = "finished", **detail) -> Path:
    """A run directory made by ``fit``'s own configuration path: ``run.json`` and ``results.json`` exactly as
    ``mopo-lightning fit`` writes them (LightningCLI parse, links, ``RunDirectory``, ``RunResults``), with the
    given evaluations and status instead of training."""
    import warnings

    from mopo_lightning.commands.fit import MOPOCLI
    from mopo_lightning.recipe import run_results
    from mopo_lightning.training.run_dir import RunDirectory

    with warnings.catch_warnings():  # pytest's sys.argv beside args
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = MOPOCLI(args=[*args, "--run_root", str(root), "--run_name", name])
    kw = cli.recipe_arguments()
    run = RunDirectory(kw["run"].run_dir)
    run.prepare(kw["run"].config, None)
    run.start()
    results = run_results(kw["data"], kw["mopo"], kw["run"], kw["trainer"], kw["evaluation"])
    returns = returns or [10.0 * (s or 0.0) for s in scores]
    results.data["evaluations"] = [
        {"sac_updates": 100 * (i + 1), "return_mean": r, "return_std": 1.0, "normalized_score": s}
        for i, (s, r) in enumerate(zip(scores, returns, strict=True))]
    results.set_status(status, **detail)
    return cli.run_dir
