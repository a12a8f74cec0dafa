"""``select`` on two tiny real fit runs (Hopper, random data): estimates with each run's own model, a choice, and
the DOPE metrics read after it, with ``gymnasium.make`` refused while selecting (no real env)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium
import pytest
from conftest import run_cli

from mopo_lightning.commands.cli import main as cli_main
from mopo_lightning.commands.select import main

REPO = Path(__file__).resolve().parents[2]
TINY = ["--trainer.max_epochs", "1", "--data.updates_per_epoch", "20", "--mopo.rollout_batch_size", "100",
        "--dynamics.max_epochs", "1", "--evaluation.num_episodes", "1", "--evaluation.max_episode_steps", "50"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, hopper_small) -> Path:
    """Two finished fit runs on the same file: MOPO (lambda 1) and lambda 0 (dynamics from the cache)."""
    cwd = tmp_path_factory.mktemp("select")
    common = ["--config", str(REPO / "conf" / "hopper_random.yaml"), "--data.path", str(hopper_small), *TINY]
    run_cli("fit", *common, "--run_name", "a", cwd=cwd)
    run_cli("fit", *common, "--run_name", "b", "--mopo.penalty_coef", "0", cwd=cwd)
    return cwd / "checkpoints"


def test_select_without_a_real_env(runs, tmp_path, monkeypatch, capsys):
    def refuse(*args, **kwargs):
        raise AssertionError("select built a real env")

    monkeypatch.setattr(gymnasium, "make", refuse)
    main([str(runs)], json=True, out=str(tmp_path), quiet=True)
    selection = json.loads(capsys.readouterr().out)
    assert selection == json.loads((tmp_path / "select.json").read_text())
    assert "optimistic" in selection["estimator"]["variant"] and selection["left_out"] == []
    rows = selection["candidates"]
    assert len(rows) == 2 and len({r["group"] for r in rows}) == 1  # one dataset, by content
    for row in rows:
        assert "error" not in row, row
        assert math.isfinite(row["estimate"]) and row["estimate_min"] <= row["estimate"] + 1e-9
        assert row["model_value"]["horizon"] == 1000 and row["model_value"]["starts"] > 10
        assert row["online"] is not None  # read after choosing
    (chosen,) = [r for r in rows if r["chosen"]]
    assert chosen["estimate"] == max(r["estimate"] for r in rows)
    assert selection["chosen"] == {chosen["group"]: chosen["run"]}
    (group,) = selection["metrics"]["groups"]
    assert group["n"] == 2 and group["regret"]["1"] is not None and selection["metrics"]["n_groups"] == 1
    md = (tmp_path / "select.md").read_text()
    assert "**chosen**" in md and "regret@1" in md and "optimistic" in md


def test_the_command_in_the_table(runs, monkeypatch, capsys):
    monkeypatch.setattr(gymnasium, "make", lambda *a, **k: (_ for _ in ()).throw(AssertionError("real env")))
    assert cli_main(["select", str(runs / "a"), "--quiet", "true", "--fqe_updates", "50"]) in (0, None)
    out = capsys.readouterr().out
    assert "| candidate run |" in out and "FQE" in out and out.count("**chosen**") == 1
