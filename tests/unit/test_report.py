"""``mopo-lightning report``: Table 2 (OOD) and Table 1 (D4RL) numbers from results.json files."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from mopo_lightning.commands.cli import main
from mopo_lightning.report import Settings, build_report, d4rl_kind, episode_returns


def jump_dataset(path: Path) -> Path:
    """7 rows: episode A (rows 0-2, timeout), episode B (rows 3-4, terminal), a partial episode (5-6).

    halfcheetah-jump reward min(v_x, 3) - 0.1 ||a||^2 + 15 (z - z_reset) per row:
    A: (1 - 0.15 + 1.5) + 3 + 2 = 7.35; B: -1 + 0.5 = -0.5; partial: 3 + 15 each (left out).
    The stored ``rewards`` are deliberately different (all 100): the report must relabel.
    """
    actions = np.zeros((7, 6), np.float32)
    actions[0] = 0.5  # 0.1 * 6 * 0.25 = 0.15
    vx = np.array([1.0, 4.0, 2.0, -1.0, 0.5, 10.0, 10.0])
    z0 = np.full(7, 0.7)
    z = np.array([0.8, 0.7, 0.7, 0.7, 0.7, 1.7, 1.7])
    terminals = np.array([0, 0, 0, 0, 1, 0, 0], bool)
    timeouts = np.array([0, 0, 1, 0, 0, 0, 0], bool)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f["observations"] = np.zeros((7, 17), np.float32)
        f["next_observations"] = np.zeros((7, 17), np.float32)
        f["actions"], f["rewards"] = actions, np.full(7, 100.0, np.float32)
        f["terminals"], f["timeouts"] = terminals, timeouts
        f["infos/x_velocity"], f["infos/y_velocity"] = vx, np.zeros(7)
        f["infos/torso_height"], f["infos/torso_height_at_reset"] = z, z0
    return path


def write_run(root: Path, name: str, task: str, dataset: str, seed: int, returns: list[float],
              scores: list[float | None] | None = None, penalty_coef: float | None = 1.0) -> Path:
    run_dir = root / "checkpoints" / name
    run_dir.mkdir(parents=True)
    scores = scores or [None] * len(returns)
    evals = [{"sac_updates": 1000 * (i + 1), "return_mean": r, "return_std": 1.0, "normalized_score": s}
             for i, (r, s) in enumerate(zip(returns, scores, strict=True))]
    data = {"task": task, "dataset": dataset, "seed": seed, "evaluations": evals,
            "final_normalized_score": scores[-1], "seconds": {}, "status": "finished"}
    if penalty_coef is not None:
        data |= {"penalty_coef": penalty_coef, "rollout_length": 5}
    (run_dir / "results.json").write_text(json.dumps(data))
    return run_dir


@pytest.fixture
def runs(tmp_path) -> list[Path]:
    jump_dataset(tmp_path / "data" / "hc-sac.hdf5")
    rel = "data/hc-sac.hdf5"  # relative to the directory the fits ran in (the run root's parent)
    return [
        write_run(tmp_path, "jump-s0", "halfcheetah-jump", rel, 0, [5.0, 100.0]),
        write_run(tmp_path, "jump-s1", "halfcheetah-jump", rel, 1, [7.0, 200.0]),
        write_run(tmp_path, "jump-mbpo", "halfcheetah-jump", rel, 0, [80.0], penalty_coef=0.0),
        write_run(tmp_path, "jump-l5", "halfcheetah-jump", rel, 0, [40.0], penalty_coef=5.0),  # its own row
        write_run(tmp_path, "hop-s0", "hopper", "hopper-medium-replay-v2", 0, [1.0, 2.0], [30.0, 60.0]),
        write_run(tmp_path, "hop-s1", "hopper", "hopper-medium-replay-v2", 1, [3.0], [70.0], penalty_coef=None),
        write_run(tmp_path, "walk-s0", "walker2d", "walker2d-random-v2", 0, [3.0], [10.0], penalty_coef=5.0),
        write_run(tmp_path, "hop-mbpo", "hopper", "hopper-medium-replay-v2", 0, [3.0], [20.0], penalty_coef=0.0),
    ]


def test_episode_returns_are_relabelled_and_skip_the_partial_tail(tmp_path):
    path = jump_dataset(tmp_path / "d.hdf5")
    np.testing.assert_allclose(episode_returns(path, "halfcheetah-jump"), [7.35, -0.5], atol=1e-5)
    np.testing.assert_allclose(episode_returns(path, "halfcheetah"), [300.0, 200.0])


def report(runs: list[Path]) -> dict:
    return build_report(runs, Settings(reps=200))[0]


def test_ood_table_numbers(runs):
    rows = report(runs)["ood"]
    assert [(r["rollout_length"], r["penalty_coef"]) for r in rows] == [(5, 1.0), (5, 5.0)]
    row = rows[0]
    assert row["task"] == "halfcheetah-jump" and row["episodes"] == 2
    assert row["batch_mean"] == pytest.approx((7.35 - 0.5) / 2, abs=1e-5)
    assert row["batch_max"] == pytest.approx(7.35, abs=1e-5)
    assert row["mopo"]["n"] == 2 and row["mopo"]["mean"]["value"] == 150.0  # last evaluations: 100 and 200
    assert row["mopo"]["mean"]["low"] == 100.0 and row["mopo"]["mean"]["high"] == 200.0  # the range of 2 runs
    one = {"value": 80.0, "low": 80.0, "high": 80.0, "kind": "range"}
    assert row["mbpo"] == {"n": 1, "mean": one, "iqm": one}
    assert rows[1]["mopo"]["mean"]["value"] == 40.0 and rows[1]["mbpo"] == row["mbpo"]
    assert rows[1]["batch_max"] == row["batch_max"]


def test_d4rl_kind():
    assert [d4rl_kind(n) for n in ("hopper-medium-replay-v2", "walker2d_medium_expert-v2", "hopper-random-v0",
                                   "data/quick.hdf5", "data/hopper-sac-30k.hdf5")] == [
        "mixed", "medium-expert", "random", "quick", "sac-30k"]


def test_table1_puts_methods_side_by_side_with_the_papers_number(runs):
    rows = {(r["dataset"], r["env"]): r for r in report(runs)["table1"]}
    assert sorted(rows) == [("mixed", "hopper"), ("random", "walker2d")]
    hopper = rows[("mixed", "hopper")]
    assert hopper["methods"]["h5 lam1"]["mean"]["value"] == 60.0  # final evaluation only
    assert hopper["methods"]["default"]["mean"]["value"] == 70.0  # no penalty_coef or h recorded
    assert hopper["methods"]["h5 lam0"]["n"] == 1  # MBPO
    assert hopper["paper_mopo"] == 67.5  # a D4RL name: the paper's number stands beside it
    assert rows[("random", "walker2d")]["methods"]["h5 lam5"]["n"] == 1
    assert [r["dataset"] for r in report(runs)["table1"]] == ["random", "mixed"]  # the paper's row order
    assert "halfcheetah-jump" not in str(rows)


def test_report_command_prints_markdown_tables(runs, capsys):
    main(["report", *map(str, runs), "--reps", "200"])
    out = capsys.readouterr().out
    assert "### Out-of-distribution tasks (average return, mean over seeds; paper Table 2)" in out
    ood = out.split("### Out-of-distribution")[1].split("###")[0].splitlines()
    cells = [c.strip() for c in ood[4].split("|")[1:-1]]
    assert cells[:4] == ["halfcheetah-jump", "hc-sac.hdf5", "5", "1"]
    assert cells[4] == "3.4" and cells[5] in ("7.3", "7.4")
    assert cells[6] == "150.0 (range 100.0..200.0, n=2)" and cells[7] == "80.0 (range 80.0..80.0, n=1)"
    assert "### Table 1: normalised score per dataset" in out and "| mixed | hopper |" in out
    main(["report", str(runs[0]), "--json", "--reps", "50"])
    data = json.loads(capsys.readouterr().out)
    assert data["ood"][0]["mopo"]["mean"]["value"] == 100.0 and data["table1"] == []
    with pytest.raises(SystemExit, match="not a run's results.json"):
        main(["report", str(runs[0]), str(jump_dataset(runs[0].parent / "x.hdf5"))])
