"""MOPO as a whole learns: a short fit on random Hopper data must end clearly above the data's own score.

The parts have their own tests; this one fails when the whole is wired wrong. Checked by mutation
(3 SAC epochs of 1000 updates, lambda 3, h 5, seed 0, final normalised score; the data: mean 1.21, best
episode 7.72, so the bar below is 4.47):

=====================================================  =====
the code                                               score
=====================================================  =====
as it is                                               7.14
penalty sign flipped (r + lambda u)                    1.87
rollouts from s' = delta (s not added to the model's)  1.33
mix of real rows only (model rows never mixed in)      2.06
model rows' terminated flags dropped in the mix        4.16
=====================================================  =====

Hopper's reward is mostly its alive bonus, so rewards shuffled across model rows (7.13) stay invisible here;
the termination flags and the states carry the signal. lambda 3 (the paper's Hopper-random uses 1) makes the
penalty's sign show within 3,000 updates: at lambda 1 the flipped sign still scored 5.98.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mopo_lightning.commands.cli import main
from mopo_lightning.data.summary import summarize
from mopo_lightning.envs.tasks import get_task

pytestmark = pytest.mark.slow
QUICKSTART = Path(__file__).resolve().parents[2] / "conf" / "quickstart.yaml"


def test_mopo_ends_clearly_above_the_data_it_learned_from(tmp_path, hopper_random_20k):
    main(["fit", "--config", str(QUICKSTART), "--data.path", str(hopper_random_20k), "--collect.path", "null",
          "--run_root", str(tmp_path), "--run_name", "learn", "--trainer.max_epochs", "3",
          "--mopo.rollout_batch_size", "2000", "--mopo.penalty_coef", "3", "--dynamics.max_epochs", "30",
          "--evaluation.num_episodes", "5", "--trainer.enable_progress_bar", "false"])
    results = json.loads((tmp_path / "learn" / "results.json").read_text())
    data = summarize(hopper_random_20k, get_task("hopper"))["normalized_score"]
    bar = data["mean"] + 0.5 * (data["max"] - data["mean"])  # halfway from the data's mean to its best episode
    assert results["status"] == "finished" and len(results["evaluations"]) == 3
    assert results["final_normalized_score"] > bar, (results["final_normalized_score"], data)
