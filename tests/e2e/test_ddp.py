"""Both stages under DDP with 2 CPU processes (gloo), then a single-process resume of its checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import collected_dataset, run_cli
from test_cli import QUICKSTART

from mopo_lightning.callbacks.evaluation import evaluate_policy
from mopo_lightning.policy.sac import SACModule

EVAL_SEED = 100_000


pytestmark = pytest.mark.slow  # two processes per fit


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("ddp")
    data = collected_dataset("hopper", 2_000, seed=0)
    args = ["fit", "--config", str(QUICKSTART), "--data.path", str(data), "--run_name", "ddp",
            "--data.updates_per_epoch", "100", "--mopo.rollout_freq", "100", "--mopo.rollout_batch_size", "1000",
            "--dynamics.max_epochs", "2", "--evaluation.num_episodes", "3", "--evaluation.seed", str(EVAL_SEED),
            "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "10",
            "--trainer.accelerator", "cpu"]
    run_cli(*args, "--trainer.max_epochs", "3", "--trainer.devices", "2", "--trainer.strategy", "ddp", cwd=cwd)
    return cwd, args


def test_ddp_trains_both_stages_and_splits_rollouts(ddp_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cwd, _ = ddp_run
    run_dir = cwd / "checkpoints" / "ddp"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["dynamics"]["epochs"] == 2
    assert [e["sac_updates"] for e in results["evaluations"]] == [100, 200, 300]
    acc = EventAccumulator(str(run_dir / "tensorboard" / "sac"))
    acc.Reload()
    # Each rank rolls out its own half of the start states (rank 0 logs its share).
    assert {e.value for e in acc.Scalars("rollout/start_states")} == {500.0}
    # SACModule.on_train_epoch_end raises if the ranks' weights differ: the run finishing means the
    # all-reduced gradients kept both ranks identical although each sampled its own batches.
    state = torch.load(run_dir / "sac" / "last.ckpt", weights_only=True)
    assert int(state["state_dict"]["sac_updates"]) == 300


def test_ddp_evaluation_equals_single_process_evaluation(ddp_run):
    cwd, _ = ddp_run
    run_dir = cwd / "checkpoints" / "ddp"
    module = SACModule.load_from_checkpoint(run_dir / "sac" / "last.ckpt", weights_only=True).eval()
    single = evaluate_policy("hopper", lambda obs: module.act(obs, deterministic=True), range(3), seed=EVAL_SEED,
                             policy_batch=3)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["evaluations"][-1]["return_mean"] == pytest.approx(float(single.returns.mean()), abs=1e-9)


def test_ddp_checkpoint_resumes_in_a_single_process(ddp_run):
    cwd, args = ddp_run
    run_cli(*args, "--trainer.max_epochs", "4", "--trainer.devices", "1", "--ckpt_path", "last", cwd=cwd)
    results = json.loads((cwd / "checkpoints" / "ddp" / "results.json").read_text())
    assert [e["sac_updates"] for e in results["evaluations"]] == [100, 200, 300, 400]
