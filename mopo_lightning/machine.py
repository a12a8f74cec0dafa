"""What this process may use of the machine: the CPUs its affinity mask and its container quota allow, and the torch
threads each phase runs with (``torch_threads``); and whether it is the first process of its run (``is_rank_zero``).

``os.cpu_count()`` counts the host's cores: in a 2-CPU container on a 64-core host it says 64, and a
sweep sized by it would start 64 trials. ``available_cpus`` takes the smallest of the affinity mask
(``os.sched_getaffinity``: taskset, cpusets) and the CFS quota (cgroup v2 ``cpu.max``, v1
``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``), rounded up.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CGROUP = Path("/sys/fs/cgroup")


def cgroup_cpu_quota(root: Path = CGROUP) -> float | None:
    """CPUs allowed by the cgroup's CFS quota (e.g. 2.0), or None when unlimited or unknown."""
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: -1 means unlimited
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = CGROUP) -> int:
    """CPUs this process may run on: min(affinity mask, ceil(cgroup quota)), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


AUTO_THREADS = {"dynamics": 4, "rollout": 4, "sac": 1}
"""The most torch threads each phase gets under ``--num_threads auto`` (``benchmarks/threads.py``; README,
"Speed, threads and GPUs"). Stage 1's [7, 256, 200] and the rollout's [7, 1024, 200] batched matmuls split
over a few threads; the SAC update (batch 256, 256 wide) and evaluation (one MuJoCo env at a time) are too
small to gain, so they stay at 1."""


def thread_cap(environ: dict[str, str] | None = None, root: Path = CGROUP) -> int:
    """The most threads ``auto`` gives any phase: ``available_cpus``, and ``OMP_NUM_THREADS`` where set (Ray sets
    it to a worker's CPUs; the test suite to 1, so its fits stay single-threaded under pytest-xdist)."""
    environ = os.environ if environ is None else environ
    cap = available_cpus(root)
    try:
        omp = int(environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        return cap
    return max(1, min(cap, omp)) if omp > 0 else cap


def auto_threads(phase: str, cap: int) -> int:
    """``phase``'s thread count under ``auto`` on a machine whose processes may use ``cap`` threads."""
    return max(1, min(AUTO_THREADS[phase], cap))


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: as set), then restore the previous count."""
    import torch  # here, so that counting CPUs (``sweep``, ``provenance``) never loads torch

    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


LAUNCH_RANKS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")
"""What launchers set on the processes they start beside the first: torchrun (``RANK``), Lightning's DDP
(``LOCAL_RANK``, ``NODE_RANK``), SLURM (``SLURM_PROCID``)."""


def is_rank_zero(trainer: Any = None, environ: dict[str, str] | None = None) -> bool:
    """Whether this process is the first of its run: the one that checks, writes and prints.

    With a Trainer, the Trainer's answer (``trainer.is_global_zero``); without one (before it exists, or between
    stages), the launch environment's: every variable of ``LAUNCH_RANKS`` unset or 0 (DDP launchers re-run the
    command with them set on the other processes)."""
    if trainer is not None:
        return bool(trainer.is_global_zero)
    environ = os.environ if environ is None else environ
    return all(int(environ.get(key) or 0) == 0 for key in LAUNCH_RANKS)
