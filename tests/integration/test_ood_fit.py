"""MOPO and MBPO (lambda = 0) on halfcheetah-jump through the CLI, tiny budget, then ``report`` on both runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from mopo_lightning.collection.collect import collect
from mopo_lightning.data.d4rl import load_dataset

REPO = Path(__file__).resolve().parents[2]
TINY = [
    "--trainer.max_epochs", "2",
    "--data.updates_per_epoch", "40",
    "--mopo.rollout_batch_size", "300",
    "--dynamics.max_epochs", "2",
    "--evaluation.num_episodes", "2",
    "--evaluation.max_episode_steps", "200",
]


@pytest.fixture(scope="module")
def ood_runs(tmp_path_factory) -> tuple[Path, dict, dict, dict]:
    """A random HalfCheetah file (two 1000-step episodes), MOPO on it, MBPO reusing MOPO's dynamics (cache)."""
    cwd = tmp_path_factory.mktemp("ood_fit")
    collect("halfcheetah", 2_000, cwd / "data" / "hc.hdf5", policy="random", seed=0, quiet=True)
    common = ["--config", str(REPO / "conf" / "halfcheetah_jump.yaml"), "--data.path", "data/hc.hdf5", *TINY]
    run_cli("fit", *common, "--run_name", "mopo", cwd=cwd)
    run_cli("fit", *common, "--run_name", "mbpo", "--mopo.penalty_coef", "0", cwd=cwd)  # dynamics from the cache
    mopo, mbpo = (json.loads((cwd / "checkpoints" / n / "results.json").read_text()) for n in ("mopo", "mbpo"))
    report = json.loads(run_cli("report", "checkpoints/mopo", "checkpoints/mbpo", "--json", cwd=cwd).stdout)
    return cwd, mopo, mbpo, report


def test_results_of_a_variant_hold_returns_and_no_score(ood_runs):
    _, mopo, mbpo, _ = ood_runs
    assert mopo["task"] == "halfcheetah-jump" and mopo["dataset"] == "data/hc.hdf5"
    assert (mopo["penalty_coef"], mopo["rollout_length"]) == (1.0, 5)
    assert mbpo["penalty_coef"] == 0.0
    for results in (mopo, mbpo):
        assert [e["sac_updates"] for e in results["evaluations"]] == [40, 80]
        assert all(e["normalized_score"] is None and math.isfinite(e["return_mean"])
                   for e in results["evaluations"])
        assert results["final_normalized_score"] is None
        assert results["final_return"] == results["evaluations"][-1]["return_mean"]


def test_report_on_the_two_runs(ood_runs):
    cwd, mopo, mbpo, report = ood_runs
    (row,) = report["ood"]
    assert row["task"] == "halfcheetah-jump" and report["table1"] == [] and report["left_out"] == []
    for name, results in (("mopo", mopo), ("mbpo", mbpo)):  # one seed: the range is the point itself
        assert results["status"] == "finished"
        final = results["evaluations"][-1]["return_mean"]
        point = {"value": final, "low": final, "high": final, "kind": "range"}
        assert row[name] == {"n": 1, "mean": point, "iqm": point}
    # batch statistics: the relabelled rewards of the two 1000-step episodes of the file
    rewards = load_dataset(cwd / "data" / "hc.hdf5", "halfcheetah-jump")["next", "reward"].squeeze(-1).double()
    episodes = rewards.reshape(2, 1000).sum(1).numpy()
    assert row["episodes"] == 2
    assert row["batch_mean"] == pytest.approx(float(np.mean(episodes)), abs=1e-3)
    assert row["batch_max"] == pytest.approx(float(np.max(episodes)), abs=1e-3)
