"""Report statistics against rliable and hand computations; runs made by fit's own configuration path.

What a method is, finished runs only, small samples shown as ranges, pooled aggregates, and the figures.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import fit_run
from rliable import library as rly
from rliable import metrics

from mopo_lightning.analysis import statistics as st
from mopo_lightning.analysis.figures import _aligned
from mopo_lightning.commands.cli import main
from mopo_lightning.report import Settings, build_report

PAPER = {"hopper": (5, 1.0), "walker2d": (1, 1.0)}  # the paper's "mixed" h and lambda of each task


def test_iqm_by_hand_and_intervals_equal_rliable_called_directly():
    scores = np.array([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0])[:, None]  # [runs, 1 task]
    assert st.iqm(scores) == pytest.approx((3 + 4 + 5 + 6) / 4)  # the middle half of 1..8
    est = st.mean_and_iqm(scores, reps=500, seed=3)
    def func(x):
        return np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)])

    np.random.seed(3)  # rliable 1.2 bootstraps with numpy's global RNG (its random_state is not used)
    points, cis = rly.get_interval_estimates({"a": scores}, func, reps=500,
                                             random_state=np.random.RandomState(3))
    assert (est["mean"].value, est["iqm"].value) == pytest.approx(tuple(points["a"]))
    assert (est["mean"].low, est["iqm"].low, est["mean"].high, est["iqm"].high) == pytest.approx(
        (cis["a"][0, 0], cis["a"][0, 1], cis["a"][1, 0], cis["a"][1, 1]))
    assert est["mean"].low < 4.5 < est["mean"].high and est["mean"].high - est["mean"].low > 1.0
    np.random.seed(99)
    assert st.mean_and_iqm(scores, reps=500, seed=3) == est  # a fixed seed: the same intervals
    assert np.random.randint(1 << 30) == np.random.RandomState(99).randint(1 << 30)  # caller's RNG restored
    assert st.mean_and_iqm(scores, reps=500, seed=4) != est


def test_probability_of_improvement_by_hand():
    x, y = np.array([[1.0], [3.0]]), np.array([[2.0], [4.0]])
    # pairs (x > y): 1>2 no, 1>4 no, 3>2 yes, 3>4 no -> 1/4
    assert st.probability_of_improvement(x, y, reps=200).value == pytest.approx(0.25)
    assert st.probability_of_improvement(y, x, reps=200).value == pytest.approx(0.75)
    assert st.probability_of_improvement(x + 10, y, reps=200).as_dict() == {"value": 1.0, "low": 1.0, "high": 1.0,
                                                                            "kind": "bootstrap"}
    ties = np.array([[1.0], [2.0]])
    assert st.probability_of_improvement(ties, ties.copy(), reps=200).value == 0.5
    # two tasks: the average of per-task probabilities (1 and 0.25)
    two_x, two_y = np.hstack([x + 10, x]), np.hstack([y, y])
    assert st.probability_of_improvement(two_x, two_y, reps=200).value == pytest.approx(0.625)


def test_unequal_tasks_pool_every_run_and_equal_ones_are_rliables():
    equal = [np.arange(5.0), np.arange(5.0) + 10]
    direct = st.mean_and_iqm(np.stack(equal, axis=1), reps=300, seed=1)
    assert st.aggregate(equal, reps=300, seed=1) == direct
    ragged = [np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), np.array([10.0, 20.0])]
    est = st.aggregate(ragged, reps=300, seed=1)
    assert est["mean"].value == pytest.approx((3.5 + 15.0) / 2)  # the mean of the task means
    assert est["iqm"].value == pytest.approx(np.mean([3.0, 4.0, 5.0, 6.0]))  # middle half of all 8 runs
    assert est["mean"].kind == "range"  # the second task has 2 runs: per task below MIN_RUNS (issue 30)
    wide = st.aggregate([ragged[0], np.array([10.0, 20.0, 30.0, 40.0, 50.0])], reps=300, seed=1)
    assert wide["mean"].value == pytest.approx((3.5 + 30.0) / 2)
    assert wide["iqm"].value == pytest.approx(np.mean([3.0, 4.0, 5.0, 6.0, 10.0, 20.0, 30.0]))  # trim 2 of 11 a side
    assert wide["mean"].low < wide["mean"].value < wide["mean"].high and wide["mean"].kind == "bootstrap"
    # P(X > Y) on unequal tasks: per task by hand, averaged
    xs = [np.array([5.0, 6.0, 7.0]), np.array([1.0, 2.0, 3.0, 4.0])]
    ys = [np.array([1.0, 6.5]), np.array([0.0, 9.0, 0.5])]
    poi = st.improvement(xs, ys, reps=300)
    # task 1: 5, 6, 7 beat 1 and only 7 beats 6.5 -> 4 of 6 pairs; task 2: all four beat 0 and 0.5, none 9 -> 8/12
    assert poi.value == pytest.approx((4 / 6 + 8 / 12) / 2)
    assert poi.kind == "none"  # fewer than MIN_RUNS runs per task (issue 30)
    five = st.improvement([np.arange(5.0), np.arange(6.0)], [np.arange(5.0) - 1, np.arange(7.0)], reps=300)
    assert five.kind == "bootstrap" and 0.0 <= five.low <= five.value <= five.high <= 1.0


def test_small_samples_show_the_range_and_no_improvement_interval():
    three = st.aggregate([np.array([3.0, 1.0, 2.0])], reps=300)
    assert three["mean"].as_dict() == {"value": 2.0, "low": 1.0, "high": 3.0, "kind": "range"}
    five = st.aggregate([np.array([3.0, 1.0, 2.0, 5.0, 4.0])], reps=300)
    assert five["mean"].kind == "bootstrap" and five["mean"].high - five["mean"].low < 4.0
    two = st.improvement([np.array([5.0, 6.0])], [np.array([1.0, 2.0])], reps=300)
    assert two.as_dict() == {"value": 1.0, "low": 1.0, "high": 1.0, "kind": "none"}


def _task_args(task: str, data: str = "medium-replay") -> list[str]:
    h, lam = PAPER[task]
    return ["--config", "conf/quickstart.yaml", "--data.task", task, "--data.path", f"data/{task}-{data}.hdf5",
            "--mopo.rollout_length", str(h), "--mopo.penalty_coef", str(lam), "--trainer.max_epochs", "2",
            "--data.updates_per_epoch", "50"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Two tasks of different sizes (hopper 11/3, walker2d 17/6), each with its paper h and lambda; arms MOPO and
    MBPO (lambda 0); hopper 3 seeds, walker2d 5; plus unnamed runs (h 5, lambda 1) on both tasks; plus a
    stopped, a failed and a running run, and an older duplicate."""
    root = tmp_path_factory.mktemp("study")
    cwd = os.getcwd()
    os.chdir(Path(__file__).resolve().parents[2])  # conf/ paths as a user gives them
    try:
        for task, seeds in (("hopper", 3), ("walker2d", 5)):
            for seed in range(seeds):
                base = 40.0 if task == "hopper" else 20.0
                fit_run(root, f"{task}-MOPO-s{seed}", [*_task_args(task), "--method", "MOPO",
                                                       "--seed_everything", str(seed)], [base / 2, base + seed])
                fit_run(root, f"{task}-MBPO-s{seed}", [*_task_args(task), "--method", "MBPO", "--mopo.penalty_coef",
                                                       "0", "--seed_everything", str(seed)],
                        [base / 4, base / 2 + seed])
            for seed in range(2):
                fit_run(root, f"{task}-plain-s{seed}", [*_task_args(task), "--mopo.rollout_length", "5",
                                                        "--seed_everything", str(seed)], [1.0, 5.0 + seed])
        args = [*_task_args("hopper"), "--method", "MOPO"]
        fit_run(root, "hopper-MOPO-s7", [*args, "--seed_everything", "7"], [99.0], status="stopped", signal=15)
        fit_run(root, "hopper-MOPO-s8", [*args, "--seed_everything", "8"], [98.0, 97.0], status="failed",
                error="NonFiniteError: non-finite loss")
        fit_run(root, "hopper-MOPO-s9", [*args, "--seed_everything", "9"], [96.0], status="running")
        old = fit_run(root / "old", "hopper-MOPO-s0", [*args, "--seed_everything", "0"], [0.0, -100.0])
        os.utime(old / "results.json", (1_000_000, 1_000_000))
    finally:
        os.chdir(cwd)
    (root / ".dynamics_cache" / "x").mkdir(parents=True)  # hidden directories are no runs
    return root


def test_methods_are_arms_or_algorithm_keys_never_sizes_or_paths(study):
    report, _ = build_report([study], Settings(reps=300))
    methods = sorted({r["method"] for r in report["configurations"]})
    assert methods == ["MBPO", "MOPO", "h5 lam1 aleatoric"]  # not split by obs_dim, data.path or per-task h
    agg = {a["method"]: a for a in report["aggregates"]}
    assert agg["MOPO"]["tasks"] == ["hopper hopper-medium-replay", "walker2d walker2d-medium-replay"]
    assert agg["MOPO"]["runs"] == {"hopper hopper-medium-replay": 3, "walker2d walker2d-medium-replay": 5}
    assert agg["MOPO"]["n"] == 8 and agg["MOPO"]["iqm"]["kind"] == "range"  # hopper: 3 runs (issue 30: per task)
    pooled = st.aggregate([np.array([40.0, 41, 42]), np.array([20.0, 21, 22, 23, 24])], reps=300)
    assert agg["MOPO"]["iqm"] == pooled["iqm"].as_dict() and agg["MOPO"]["mean"] == pooled["mean"].as_dict()
    assert agg["h5 lam1 aleatoric"]["n"] == 4 and agg["h5 lam1 aleatoric"]["iqm"]["kind"] == "range"
    poi = {(p["x"], p["y"]): p for p in report["probability_of_improvement"]}
    assert poi[("MOPO", "MBPO")]["value"] == 1.0 and poi[("MOPO", "MBPO")]["tasks"] == agg["MOPO"]["tasks"]
    assert poi[("MOPO", "MBPO")]["kind"] == "none" and poi[("MOPO", "h5 lam1 aleatoric")]["kind"] == "none"
    table = {(r["dataset"], r["env"]): r for r in report["table1"]}
    assert sorted(table) == [("mixed", "hopper"), ("mixed", "walker2d")]  # D4RL's medium-replay is the paper's mixed
    assert table[("mixed", "hopper")]["methods"]["MOPO"]["n"] == 3
    assert table[("mixed", "walker2d")]["methods"]["MBPO"]["mean"]["value"] == pytest.approx(12.0)
    assert table[("mixed", "hopper")]["paper_mopo"] is None  # our own file: the paper's 67.5 is not its number


def test_unfinished_runs_are_left_out_and_named_unless_asked_for(study, capsys):
    report, _ = build_report([study], Settings(reps=300))
    left = {Path(r["run"]).name: r["reason"] for r in report["left_out"]}
    assert left["hopper-MOPO-s7"] == "stopped (signal 15)"
    assert left["hopper-MOPO-s8"] == "failed (error NonFiniteError: non-finite loss)"
    assert left["hopper-MOPO-s9"].startswith("status running")
    assert left["hopper-MOPO-s0"] == "repeats the configuration and seed of a newer run"  # the older copy
    row = next(r for r in report["configurations"] if r["configuration"] == "hopper hopper-medium-replay MOPO")
    assert row["seeds"] == [0, 1, 2] and row["values"] == [40.0, 41.0, 42.0] and row["unfinished"] == []
    assert row["statistics"]["mean"] == {"value": 41.0, "low": 40.0, "high": 42.0, "kind": "range"}
    wide, _ = build_report([study], Settings(reps=300, include_unfinished=True))
    row = next(r for r in wide["configurations"] if r["configuration"] == "hopper hopper-medium-replay MOPO")
    assert row["seeds"] == [0, 1, 2, 7, 8, 9] and row["values"][3:] == [99.0, 97.0, 96.0]
    assert [Path(p).name for p in row["unfinished"]] == ["hopper-MOPO-s7", "hopper-MOPO-s8", "hopper-MOPO-s9"]
    assert row["evaluations_per_seed"] == [1, 2]
    main(["report", str(study), "--reps", "200", "--include_unfinished", "true"])
    out = capsys.readouterr().out
    assert "| hopper hopper-medium-replay MOPO (3 unfinished) |" in out and "unfinished runs included" in out
    assert "dashed tail fewer seeds" in out


def test_curves_keep_the_seeds_that_went_further():
    x, values, tail_x, tail_mean = _aligned([[(1, 1.0), (2, 2.0), (3, 3.0)], [(1, 3.0), (2, 4.0)]])
    assert x.tolist() == [1, 2] and values.shape == (2, 1, 2)
    assert tail_x.tolist() == [3] and tail_mean.tolist() == [3.0]


def test_report_command_writes_markdown_json_and_figures(study, tmp_path, capsys):
    out = tmp_path / "report"
    main(["report", str(study), "--out", str(out), "--reps", "200"])
    text, err = capsys.readouterr()
    assert "4 run(s) left out" in err and "hopper-MOPO-s7: stopped (signal 15)" in err
    assert "| hopper hopper-medium-replay MOPO | score | 0 1 2 | 41.0 (range 40.0..42.0, n=3) |" in text
    assert "| walker2d walker2d-medium-replay MOPO | score | 0 1 2 3 4 | 22.0 [" in text
    assert "finished runs only" in text and "range [min, max]" in text and "at least 5 runs" in text
    assert ("| mixed | hopper | 41.0 (range 40.0..42.0, n=3) | 5.5 (range 5.0..6.0, n=2) | 21.0 (range 20.0..22.0, "
            "n=3) | - |") in text
    assert "### Probability of improvement" in text and "### Across tasks" in text
    assert (out / "report.md").read_text().strip() == text.strip()
    data = json.loads((out / "report.json").read_text())
    names = sorted(Path(f).name for f in data["figures"])
    assert len([n for n in names if n.endswith("_curves.png")]) == 2  # hopper, walker2d
    assert len([n for n in names if n.endswith("_intervals.png")]) == 2
    assert not [n for n in names if n.startswith("heatmap")]  # named arms are no h x lambda grid
    for name in names:
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    main(["report", str(study), "--json", "--reps", "50"])
    assert json.loads(capsys.readouterr().out)["settings"]["bootstrap_reps"] == 50
