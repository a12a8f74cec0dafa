"""The CPUs a process may use: its affinity mask and its container's CFS quota, not the host's core count."""

from __future__ import annotations

import os

from mopo_lightning.machine import available_cpus, cgroup_cpu_quota


def test_the_quota_and_the_affinity_mask_bound_the_count(tmp_path):
    mask = len(os.sched_getaffinity(0))
    assert cgroup_cpu_quota(tmp_path) is None and available_cpus(tmp_path) == mask  # no cgroup files: the mask
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None and available_cpus(tmp_path) == mask
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs -> 2 (rounded up), never above the mask
    assert cgroup_cpu_quota(tmp_path) == 1.5 and available_cpus(tmp_path) == min(2, mask)
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1  # at least one
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(v1) == 1.0 and available_cpus(v1) == 1
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_quota(v1) is None


def test_the_affinity_mask_is_honoured(tmp_path):
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})  # as `taskset -c 0` would
        assert available_cpus(tmp_path) == 1
    finally:
        os.sched_setaffinity(0, before)
