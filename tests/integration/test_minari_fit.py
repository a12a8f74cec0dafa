"""``fit`` end to end on a real Minari dataset, through the CLI: it evaluates on the dataset's own env
(Hopper-v5, recovered from the recorded spec) and scores with the dataset's reference returns."""

from __future__ import annotations

import json
from pathlib import Path

import minari
import pytest
from conftest import run_cli

QUICKSTART = Path(__file__).resolve().parents[2] / "conf" / "quickstart.yaml"
TINY = [
    "--trainer.max_epochs", "2",
    "--data.updates_per_epoch", "50",
    "--mopo.rollout_batch_size", "500",
    "--dynamics.max_epochs", "3",
    "--evaluation.num_episodes", "2",
    "--evaluation.max_episode_steps", "100",
    "--trainer.log_every_n_steps", "5",
]
REF_MIN, REF_MAX = -20.0, 3000.0


def test_fit_on_a_minari_dataset(minari_factory, tmp_path):
    dataset_id = minari_factory("hopper-v5", 2_000, ref_min_score=REF_MIN, ref_max_score=REF_MAX)
    run_cli("fit", "--config", str(QUICKSTART), "--data.path", "null", "--collect.path", "null",
            "--collect.steps", "null", "--data.dataset", dataset_id, "--data.task", "hopper-v5",
            "--run_name", "minari", *TINY, cwd=tmp_path)
    results = json.loads((tmp_path / "checkpoints" / "minari" / "results.json").read_text())
    assert results["dataset"] == dataset_id and results["score_reference"] == f"minari:{dataset_id}"
    evals = results["evaluations"]
    assert [e["sac_updates"] for e in evals] == [50, 100]
    dataset = minari.load_dataset(dataset_id)
    for e in evals:  # the dataset's references (D4RL's hopper would be -20.27 and 3234.3)
        expected = 100.0 * float(minari.get_normalized_score(dataset, e["return_mean"]))
        assert e["normalized_score"] == pytest.approx(expected, rel=1e-9)
