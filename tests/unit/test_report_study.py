"""``report`` gives the README's tiny Table 1 study the numbers it gave before the cell-keying fixes, wherever no
defect applied (issue 30's acceptance).

The runs behind ``docs/table1_tiny/report.json`` are not in git; their per-seed scores are (``values``). Runs are
rebuilt from them as ``fit`` records them, and the report is made again with the stored bootstrap settings. Every
configuration's statistics and every Table 1 cell must come back equal. The across-task rows keep their point
estimates; their intervals become ranges (3 runs per task is below ``MIN_RUNS`` per task: the fixed defect).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report_cells import make_run

from mopo_lightning.report import Settings, build_report

STORED = Path(__file__).resolve().parents[2] / "docs" / "table1_tiny" / "report.json"


def flat(tree: dict, prefix: str = "") -> dict:
    """Nested statistics as one level of dotted keys (``pytest.approx`` compares flat dicts only)."""
    out = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def assert_same(got: dict, old: dict) -> None:
    """Equal keys and labels; numbers equal to 12 digits (the same arithmetic, maybe in another order)."""
    got, old = flat(got), flat(old)
    assert got.keys() == old.keys()
    for key, value in old.items():
        assert got[key] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-12)), key


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> tuple[dict, dict]:
    stored = json.loads(STORED.read_text())
    root = tmp_path_factory.mktemp("study")
    for row in stored["configurations"]:
        for seed, value in zip(row["seeds"], row["values"], strict=True):
            make_run(root, f"{Path(row['dataset']).stem}-{row['method']}-s{seed}", task=row["task"],
                     dataset=row["dataset"], seed=seed, method=row["method"], h=row["rollout_length"],
                     lam=row["penalty_coef"], score=value, epochs=5)
    s = stored["settings"]
    # 100 replications, not the stored 2000: every interval compared is a range or none, which no bootstrap draws
    return stored, build_report([root], Settings(s["last"], 100, s["bootstrap_seed"]))[0]


def test_every_configuration_has_its_stored_statistics(reports):
    stored, new = reports
    old = {(r["task"], Path(r["dataset"]).stem, r["method"]): r["statistics"] for r in stored["configurations"]}
    got = {(r["task"], Path(r["dataset"]).stem, r["method"]): r["statistics"] for r in new["configurations"]}
    assert got.keys() == old.keys()
    for key, stats in old.items():
        assert_same(got[key], stats)


def test_every_table1_cell_has_its_stored_statistics(reports):
    stored, new = reports
    old = {f"{r['dataset']} {r['env']} {m}": s for r in stored["table1"] for m, s in r["methods"].items()}
    got = {f"{r['dataset']} {r['env']} {m}": s for r in new["table1"] for m, s in r["methods"].items()}
    assert_same(got, old)


def test_across_tasks_keeps_its_points_and_shows_ranges_below_five_runs_per_task(reports):
    stored, new = reports
    old = {a["method"]: a for a in stored["aggregates"]}
    got = {a["method"]: a for a in new["aggregates"]}
    assert got.keys() == old.keys() == {"MOPO", "MBPO"}  # each arm pools its four datasets (h differs per dataset)
    for method, row in old.items():
        for stat in ("mean", "iqm"):
            assert got[method][stat]["value"] == pytest.approx(row[stat]["value"], rel=1e-12)
            assert got[method][stat]["kind"] == "range"  # was a "95%" bootstrap over 12 runs of 3 per task
    pairs = {(p["x"], p["y"]): p for p in new["probability_of_improvement"]}
    for p in stored["probability_of_improvement"]:
        assert pairs[p["x"], p["y"]]["value"] == pytest.approx(p["value"], rel=1e-12)
        assert pairs[p["x"], p["y"]]["kind"] == "none"
