"""Report statistics against rliable called directly and against values computed by hand; the figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics

from mopo_lightning.analysis import statistics as st
from mopo_lightning.cli import main
from mopo_lightning.report import Settings, build_report


def write_run(root: Path, name: str, seed: int, scores: list[float], h: int = 5, lam: float = 1.0,
              task: str = "hopper", dataset: str = "hopper-medium-replay-v2", mtime: float | None = None) -> Path:
    run = root / name
    run.mkdir(parents=True)
    evals = [{"sac_updates": 100 * (i + 1), "return_mean": 10.0 * s, "normalized_score": s}
             for i, s in enumerate(scores)]
    (run / "results.json").write_text(json.dumps({
        "task": task, "dataset": dataset, "seed": seed, "rollout_length": h, "penalty_coef": lam,
        "evaluations": evals, "final_normalized_score": scores[-1], "final_return": 10.0 * scores[-1],
        "score_reference": "D4RL", "final_premise": {"spearman": 0.1 * seed, "violation_rate": 0.5,
                                                     "return_gap": 2.0}}))
    (run / "run.json").write_text(json.dumps({"data.penalty_kind": "aleatoric", "seed_everything": seed,
                                              "run_name": name, "model.lr": 3e-4}))
    if mtime is not None:
        os.utime(run / "results.json", (mtime, mtime))
    return run


def test_iqm_by_hand_and_intervals_equal_rliable_called_directly():
    scores = np.array([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0])[:, None]  # [runs, 1 task]
    assert st.iqm(scores) == pytest.approx((3 + 4 + 5 + 6) / 4)  # the middle half of 1..8
    est = st.mean_and_iqm(scores, reps=500, seed=3)
    func = lambda x: np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)])
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
    assert st.probability_of_improvement(x + 10, y, reps=200).as_dict() == {"value": 1.0, "low": 1.0, "high": 1.0}
    ties = np.array([[1.0], [2.0]])
    assert st.probability_of_improvement(ties, ties.copy(), reps=200).value == 0.5
    # two tasks: the average of per-task probabilities (1 and 0.25)
    two_x, two_y = np.hstack([x + 10, x]), np.hstack([y, y])
    assert st.probability_of_improvement(two_x, two_y, reps=200).value == pytest.approx(0.625)


@pytest.fixture
def study(tmp_path) -> Path:
    """A 2 x 2 grid of h x lambda with 4 seeds each, one duplicate seed, one config on a second dataset."""
    root = tmp_path / "sweep"
    for h in (1, 5):
        for lam in (1.0, 5.0):
            for seed in range(4):
                base = 10 * h + lam
                write_run(root, f"h{h}-lam{lam:g}-s{seed}", seed, [base / 2, base + seed], h=h, lam=lam)
    write_run(root, "old-h1-lam1-s0", 0, [0.0, -100.0], h=1, lam=1.0, mtime=1_000_000)  # older duplicate of s0
    write_run(root, "hc-s0", 0, [1.0, 50.0], h=1, task="halfcheetah",
              dataset="halfcheetah-medium-replay-v2")
    write_run(root, "hc-s1", 1, [1.0, 60.0], h=1, task="halfcheetah",
              dataset="halfcheetah-medium-replay-v2")
    (root / ".dynamics_cache" / "x").mkdir(parents=True)  # hidden directories are no runs
    return root


def test_configurations_deduplicate_and_match_rliable(study):
    report, _ = build_report([study], Settings(reps=300, seed=0))
    assert report["duplicates_left_out"] == [str(study / "old-h1-lam1-s0")]
    rows = {r["configuration"]: r for r in report["configurations"]}
    row = rows["hopper hopper-medium-replay-v2 h1 lam1 aleatoric"]
    assert row["seeds"] == [0, 1, 2, 3] and row["values"] == [11.0, 12.0, 13.0, 14.0]  # final evaluations
    direct = st.mean_and_iqm(np.array(row["values"])[:, None], reps=300, seed=0)
    assert row["statistics"] == {"n": 4, "mean": direct["mean"].as_dict(), "iqm": direct["iqm"].as_dict()}
    assert row["statistics"]["iqm"]["value"] == pytest.approx(12.5)  # middle two of 11..14
    assert row["premise"] == pytest.approx({"spearman": 0.15, "violation_rate": 0.5, "return_gap": 2.0})
    assert row["score_reference"] == ["D4RL"]
    assert len(rows) == 5 and "model.lr" not in str(rows)  # a key equal in every run does not split configs
    last2, _ = build_report([study], Settings(last=2, reps=300))
    row2 = next(r for r in last2["configurations"] if r["configuration"] == row["configuration"])
    assert row2["values"] == [(5.5 + 11) / 2, (5.5 + 12) / 2, (5.5 + 13) / 2, (5.5 + 14) / 2]
    assert last2["settings"]["score"] == "mean of the last 2 evaluations"


def test_aggregates_and_probability_of_improvement_across_tasks(study):
    report, _ = build_report([study], Settings(reps=300))
    agg = {a["method"]: a for a in report["aggregates"]}
    h1 = agg["h1 lam1 aleatoric"]  # hopper (seeds 0-3) and halfcheetah (seeds 0, 1): seeds 0 and 1
    assert h1["tasks"] == ["halfcheetah halfcheetah-medium-replay-v2", "hopper hopper-medium-replay-v2"]
    assert h1["seeds"] == 2
    direct = st.mean_and_iqm(np.array([[50.0, 11.0], [60.0, 12.0]]), reps=300)
    assert h1["iqm"] == direct["iqm"].as_dict() and h1["mean"]["value"] == pytest.approx(33.25)
    poi = {(p["x"], p["y"]): p for p in report["probability_of_improvement"]}
    # on hopper, h5 lam5 (55..58) beats h1 lam5 (15..18) on every pair
    assert poi[("h5 lam5 aleatoric", "h1 lam5 aleatoric")]["value"] == 1.0
    assert poi[("h1 lam5 aleatoric", "h5 lam5 aleatoric")]["value"] == 0.0
    # h1 lam1 vs h1 lam5 on hopper: 11..14 vs 15..18 -> 0; on the common task only
    assert poi[("h1 lam1 aleatoric", "h1 lam5 aleatoric")]["tasks"] == ["hopper hopper-medium-replay-v2"]
    assert report["d4rl"]["h5 lam5 aleatoric"]["mixed"]["hopper"]["n"] == 4


def test_report_command_writes_markdown_json_and_figures(study, tmp_path, capsys):
    out = tmp_path / "report"
    main(["report", str(study), "--out", str(out), "--reps", "200"])
    text, err = capsys.readouterr()
    assert "1 run(s) repeat the configuration and seed of a newer run" in err and "old-h1-lam1-s0" in err
    assert "| hopper hopper-medium-replay-v2 h1 lam1 aleatoric | score | 0 1 2 3 | 12.5 [" in text
    assert "200 replications, seed 0" in text and "Score reference(s): D4RL" in text
    assert "### Probability of improvement" in text and "### Across tasks" in text
    assert (out / "report.md").read_text().strip() == text.strip()
    data = json.loads((out / "report.json").read_text())
    names = sorted(Path(f).name for f in data["figures"])
    assert len([n for n in names if n.endswith("_curves.png")]) == 2  # hopper, halfcheetah
    assert len([n for n in names if n.endswith("_intervals.png")]) == 2
    assert [n for n in names if n.startswith("heatmap")] == ["heatmap_00_hopper_hopper-medium-replay-v2_aleatoric.png"]
    for name in names:
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    main(["report", str(study), "--json", "--reps", "50"])
    assert json.loads(capsys.readouterr().out)["settings"]["bootstrap_reps"] == 50
