"""The ``mopo-lightning`` command in a subprocess, with tiny budgets, on real MuJoCo data."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import collected_dataset, run_cli

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "conf" / "quickstart.yaml"
TINY = [
    "--trainer.max_epochs", "2",
    "--data.updates_per_epoch", "50",
    "--mopo.rollout_batch_size", "500",
    "--dynamics.max_epochs", "3",
    "--evaluation.num_episodes", "2",
    "--trainer.log_every_n_steps", "5",
]


def scalar_tags(logdir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    """Stage 1 alone, then the same run continued with ``--ckpt_path last``, which must reuse the dynamics."""
    cwd = tmp_path_factory.mktemp("fit")
    data = collected_dataset("hopper", 2_000, seed=0)
    common = ["--config", str(QUICKSTART), "--data.path", str(data), "--run_name", "e2e", *TINY,
              "--evaluation.video_every_n_evals", "2", "--evaluation.max_episode_steps", "100"]
    stage1 = run_cli("fit", *common, "--stage", "dynamics", cwd=cwd)
    # the same run continued: stage 1 is loaded, stage 2 starts
    full = run_cli("fit", *common, "--ckpt_path", "last", cwd=cwd)
    return cwd / "checkpoints" / "e2e", stage1, full


def test_fit_writes_results_json(fitted_run):
    run_dir, stage1, full = fitted_run
    results = json.loads((run_dir / "results.json").read_text())
    # --num_threads auto under the suite's OMP_NUM_THREADS=1 (conftest): one thread per phase, said once per fit
    assert results["threads"] == {"dynamics": 1, "rollout": 1, "sac": 1}
    assert [proc.stdout.count("torch threads: dynamics 1, rollout 1, sac 1") for proc in (stage1, full)] == [1, 1]
    assert results["task"] == "hopper" and results["seed"] == 0
    assert results["dataset"].endswith(".hdf5") and results["score_reference"] == "D4RL"
    dyn = results["dynamics"]
    assert dyn["epochs"] == 3
    assert len(dyn["elites"]) == 5 and len(set(dyn["elites"])) == 5
    assert all(0 <= i < 7 for i in dyn["elites"])
    assert dyn["holdout_mse_elites"] == pytest.approx(
        sum(dyn["holdout_mse_members"][i] for i in dyn["elites"]) / 5
    )
    evals = results["evaluations"]
    assert [e["sac_updates"] for e in evals] == [50, 100]
    assert results["final_normalized_score"] == evals[-1]["normalized_score"]
    assert set(results["seconds"]) >= {"dynamics", "policy"}
    assert results["status"] == "finished" and "status_detail" not in results and results["method"] is None
    assert results["planned"] == {"stage": "all", "epochs": 2, "sac_updates": 100, "evaluations": 2}
    # the penalty: the kind, lambda and its units, every kind's scale on the data, every kind measured
    from mopo_lightning.model_env.penalties import PENALTY_KINDS

    assert results["penalty"] == {"penalty_kind": "aleatoric", "penalty_coef": 1.0, "penalty_units": "raw",
                                  "penalty_coef_raw_units": 1.0}
    assert set(dyn["penalty_scales"]["kinds"]) == set(PENALTY_KINDS)
    assert all(f"{kind}/spearman" in results["final_premise"] for kind in PENALTY_KINDS)
    assert results["final_premise"]["rollout_length"] == 5  # premise.rollout_length unset: the run's h


def test_overwrite_leaves_nothing_of_the_old_run_in_any_stage(fitted_run):
    import shutil

    run_dir, _, _ = fitted_run
    old = run_dir.with_name("e2e_over")
    shutil.copytree(run_dir, old)
    data = json.loads((old / "results.json").read_text())["dataset"]
    run_cli("fit", "--config", str(QUICKSTART), "--data.path", data, "--run_name", "e2e_over", *TINY,
            "--stage", "dynamics", "--overwrite", "true", cwd=run_dir.parent.parent)
    results = json.loads((old / "results.json").read_text())
    assert results["evaluations"] == [] and results["final_normalized_score"] is None
    assert results["status"] == "finished" and results["planned"] == {"stage": "dynamics"}
    assert not (old / "sac").exists() and not (old / "tensorboard" / "sac").exists()


def test_fit_reuses_dynamics_and_logs_to_tensorboard(fitted_run):
    run_dir, stage1, full = fitted_run
    assert (run_dir / "dynamics.ckpt").exists()
    assert "dynamics: loaded" in full.stdout and "dynamics: loaded" not in stage1.stdout
    assert "tensorboard --logdir" in full.stdout
    assert (run_dir / "sac" / "last.ckpt").exists()
    dyn_tags = scalar_tags(run_dir / "tensorboard" / "dynamics")
    assert {"dynamics/holdout_mse/member_0", "dynamics/holdout_mse/elites_best", "dynamics/max_logvar"} <= dyn_tags
    assert any(tag.startswith("dynamics/train_nll") for tag in dyn_tags), dyn_tags
    sac_tags = scalar_tags(run_dir / "tensorboard" / "sac")
    expected = {
        "eval/return_mean", "eval/normalized_score", "eval/episode_length",
        "sac/loss_qvalue", "sac/loss_actor", "sac/alpha", "sac/entropy", "sac/q_mean",
        "rollout/penalty_mean", "rollout/penalty_max", "rollout/raw_reward_mean",
        "rollout/penalized_reward_mean", "rollout/termination_rate", "rollout/model_buffer_size",
    }
    assert expected <= sac_tags, expected - sac_tags


def _accumulator(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"images": 0, "histograms": 0})
    acc.Reload()
    return acc


def test_tensorboard_hparams_and_histograms(fitted_run):
    acc = _accumulator(fitted_run[0] / "tensorboard" / "sac")
    assert {"rollout/penalty", "rollout/penalized_reward", "rollout/raw_reward"} <= set(acc.Tags()["histograms"])
    hparams = acc.PluginTagToContent("hparams")
    session = b"".join(hparams.values())
    for key in (b"task", b"rollout_length", b"penalty_coef", b"seed", b"hp/final_normalized_score"):
        assert key in session, key
    scores = [e.value for e in acc.Scalars("hp/final_normalized_score")]
    results = json.loads((fitted_run[0] / "results.json").read_text())
    assert scores[-1] == pytest.approx(results["final_normalized_score"])


def _renderer_available() -> bool:
    probe = "import gymnasium as g; e = g.make('Hopper-v4', render_mode='rgb_array'); e.reset(); e.render()"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, timeout=120,
                          check=False).returncode == 0


def test_evaluation_video(fitted_run):
    if not _renderer_available():
        pytest.skip("no off-screen OpenGL renderer (MUJOCO_GL=egl/osmesa) on this machine: video not tested")
    from PIL import Image

    logdir = fitted_run[0] / "tensorboard" / "sac"
    images = _accumulator(logdir).Images("eval/video")
    assert [im.step for im in images] == [100]  # every 2nd evaluation of two
    strip = Image.open(io.BytesIO(images[0].encoded_image_string))  # 8 frames in one row
    assert strip.size == (8 * 128, 128)
    assert [p.name for p in (logdir / "videos").iterdir()] == ["eval_video_00000100.gif"]
    gif = Image.open(logdir / "videos" / "eval_video_00000100.gif")
    assert gif.format == "GIF" and gif.n_frames > 10 and gif.size == (128, 128)


def test_print_config_shows_every_section(tmp_path):
    out = run_cli("fit", "--config", str(QUICKSTART), "--print_config", cwd=tmp_path).stdout
    for key in ("trainer:", "model:", "data:", "dynamics:", "evaluation:", "target_entropy: -3.0",
                "penalty_coef: 1.0", "num_members: 7", "rollout_length: 5"):
        assert key in out, key


def test_collect_and_data_info(tmp_path):
    path = tmp_path / "walker.hdf5"
    run_cli("collect", "--task", "walker2d", "--steps", "300", "--path", str(path), "--seed", "1", cwd=tmp_path)
    info = json.loads(run_cli("data", "info", str(path), "--task", "walker2d", "--json", cwd=tmp_path).stdout)
    assert info["transitions"] == 300
    assert info["terminals"] + info["timeouts"] <= info["episodes"]


def test_parse_error_in_a_real_process_is_short(tmp_path):
    """The console script's own exit status and stderr for a typo (the in-process checks are in tests/unit)."""
    proc = subprocess.run([sys.executable, "-m", "mopo_lightning.commands.cli", "fit", "--config", str(QUICKSTART),
                           "--data.pathh", "x.hdf5"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 2
    expected = ("mopo-lightning fit: error: unknown option --data.pathh (did you mean --data.path?); "
                "see mopo-lightning fit --help")
    assert proc.stderr.strip().splitlines() == [expected], proc.stderr[-2000:]
