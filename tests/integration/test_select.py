"""``select`` on two tiny real fit runs (Hopper, random data) with ``gymnasium.make`` refused throughout (no real
env): every estimator, the evaluation model (another seed) trained into the runs' dynamics cache and served from it
the second time, epoch checkpoints as candidates, a choice, and the DOPE metrics read after it."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium
import pytest
from conftest import run_cli

from mopo_lightning.commands.cli import main as cli_main
from mopo_lightning.commands.select import main
from mopo_lightning.data.errors import DatasetError

REPO = Path(__file__).resolve().parents[2]
TINY = ["--trainer.max_epochs", "2", "--data.updates_per_epoch", "20", "--mopo.rollout_batch_size", "100",
        "--dynamics.max_epochs", "1", "--evaluation.num_episodes", "1", "--evaluation.max_episode_steps", "50",
        "--keep_checkpoints", "2"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, hopper_small) -> Path:
    """Two finished fit runs on the same file: MOPO (lambda 1) and lambda 0 (dynamics from the cache)."""
    cwd = tmp_path_factory.mktemp("select")
    common = ["--config", str(REPO / "conf" / "hopper_random.yaml"), "--data.path", str(hopper_small), *TINY]
    run_cli("fit", *common, "--run_name", "a", cwd=cwd)
    run_cli("fit", *common, "--run_name", "b", "--mopo.penalty_coef", "0", cwd=cwd)
    return cwd / "checkpoints"


@pytest.fixture
def no_real_env(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("select built a real env")

    monkeypatch.setattr(gymnasium, "make", refuse)


def test_select_without_a_real_env(runs, tmp_path, no_real_env, capsys):
    main([str(runs)], json=True, out=str(tmp_path), quiet=True)
    selection = json.loads(capsys.readouterr().out)
    assert selection == json.loads((tmp_path / "select.json").read_text())
    assert selection["left_out"] == [] and list(selection["estimators"]) == ["own_mean", "own_min", "eval_mean",
                                                                             "eval_min"]
    (model,) = selection["evaluation_models"].values()
    assert model["seed"] == 1000 and not model["loaded"]  # trained into the runs' own cache
    assert Path(model["checkpoint"]).resolve().parent.parent == (runs / ".dynamics_cache").resolve()
    own_key = json.loads((runs / "a" / "results.json").read_text())["dynamics"]["fingerprint"]
    assert model["fingerprint"] != own_key  # another seed: another model
    rows = selection["candidates"]
    assert len(rows) == 2 and len({r["group"] for r in rows}) == 1  # one dataset, by content
    for row in rows:
        assert "error" not in row, row
        est = row["estimates"]
        assert all(math.isfinite(v) for v in est.values())
        assert est["own_min"] <= est["own_mean"] + 1e-9 and est["eval_min"] <= est["eval_mean"] + 1e-9
        assert row["details"]["own_model"] != row["details"]["eval_model"]
        assert row["details"]["eval_model"]["horizon"] == 1000 and row["details"]["eval_model"]["starts"] > 10
        assert row["online"] is not None  # read after choosing
    (chosen,) = [r for r in rows if r["chosen"]]
    assert chosen["estimates"]["eval_mean"] == max(r["estimates"]["eval_mean"] for r in rows)
    assert selection["chosen"] == {chosen["group"]: chosen["candidate"]}
    (group,) = selection["metrics"]["eval_mean"]["groups"]
    assert group["n"] == 2 and group["regret"]["1"] is not None and group["best_online"] >= group["chosen_online"]
    md = (tmp_path / "select.md").read_text()
    assert "**chosen**" in md and "regret@1" in md and "trained into the cache" in md
    assert f"Chosen: {Path(chosen['run']).name}, `eval_mean` {chosen['estimates']['eval_mean']:.2f}; across the" in md
    assert {p.name for p in tmp_path.glob("*.png")} == {f"estimate_vs_online_{n}.png" for n in selection["estimators"]}


def test_epoch_candidates_and_the_cached_evaluation_model(runs, no_real_env, capsys):
    main([str(runs)], json=True, quiet=True, candidates="epochs", choose_by="own_min")
    selection = json.loads(capsys.readouterr().out)
    (model,) = selection["evaluation_models"].values()
    assert model["loaded"]  # the first test trained it
    rows = selection["candidates"]
    assert sorted((Path(r["run"]).name, r["epoch"]) for r in rows) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    for row in rows:  # each checkpoint's own evaluation, matched by its SAC update count
        results = json.loads((Path(row["run"]) / "results.json").read_text())
        evaluation = results["evaluations"][row["epoch"]]
        assert evaluation["sac_updates"] == 20 * (row["epoch"] + 1)
        assert row["online"] == evaluation["normalized_score"]
    assert sum(r["chosen"] for r in rows) == 1
    assert selection["chosen"] == selection["choices"]["own_min"]


def test_the_command_in_the_table_with_fqe(runs, no_real_env, capsys):
    assert cli_main(["select", str(runs / "a"), "--quiet", "true", "--estimators.fqe.num_updates", "50",
                     "--choose_by", "fqe"]) in (0, None)
    out = capsys.readouterr().out
    assert "| candidate |" in out and "`fqe`" in out and out.count("**chosen**") == 1


def test_an_evaluation_seed_of_the_candidates_is_refused(runs, no_real_env, capsys):
    main([str(runs / "a")], json=True, quiet=True, evaluation_seed=0)
    (model,) = json.loads(capsys.readouterr().out)["evaluation_models"].values()
    assert "seed 0 is a seed of the candidates' own models" in model["error"]


def test_report_puts_the_estimate_beside_the_online_score(runs, tmp_path, capsys):
    from mopo_lightning.commands.report import main as report
    from mopo_lightning.selection.estimators import EstimatorConfig

    main([str(runs)], out=str(tmp_path), quiet=True, choose_by="own_mean",
         estimators=EstimatorConfig(evaluation_model=False))
    selection = json.loads((tmp_path / "select.json").read_text())
    capsys.readouterr()
    report([str(runs)], json=True, selection=str(tmp_path))
    rows = json.loads(capsys.readouterr().out)["configurations"]
    estimates = {Path(r["run"]).name: r["estimates"]["own_mean"] for r in selection["candidates"]}
    assert len(rows) == 2 and sum(r["offline_estimate"]["chosen"] for r in rows) == 1
    for row in rows:
        (run,) = row["runs"]
        assert row["offline_estimate"] == {"estimator": "own_mean", "mean": estimates[Path(run).name], "n": 1,
                                           "chosen": row["offline_estimate"]["chosen"]}
    report([str(runs)], selection=str(tmp_path))
    assert "offline estimate (select `own_mean`" in capsys.readouterr().out
    with pytest.raises(DatasetError, match="not a select.json"):
        report([str(runs)], selection=str(tmp_path / "select.md"))


def test_a_dataset_that_cannot_be_read_fails_its_candidates_in_a_line(runs, monkeypatch, capsys):
    from mopo_lightning.selection import selector

    def moved(run):
        raise FileNotFoundError(f"{run.dataset}: no such file")

    monkeypatch.setattr(selector, "load_rows", moved)
    main([str(runs)], json=True, quiet=True)
    rows = json.loads(capsys.readouterr().out)["candidates"]
    assert len(rows) == 2 and all(r["error"].startswith("dataset: FileNotFoundError") for r in rows)
    assert not any(r["chosen"] for r in rows)


def test_nothing_finished_to_select_is_one_line(runs, tmp_path, capsys):
    results = json.loads((runs / "a" / "results.json").read_text())
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "results.json").write_text(json.dumps({**results, "status": "running"}))
    with pytest.raises(SystemExit) as exited:
        cli_main(["select", str(tmp_path)])
    assert exited.value.code not in (0, None)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no finished run to select from" in err[0] and "1 left out" in err[0]


def test_the_store_resumes_and_reestimates_what_changed(runs, tmp_path, no_real_env, capsys):
    from mopo_lightning.selection.estimators import EstimatorConfig
    from mopo_lightning.selection.model_value import ModelValueConfig

    main([str(runs)], json=True, quiet=True, out=str(tmp_path))
    first = json.loads(capsys.readouterr().out)
    lines = (tmp_path / "estimates.jsonl").read_text().splitlines()
    assert first["reused_estimates"] == 0 and len(lines) == 2
    # a crash cut the second line: the first estimate is reused, the second made again and appended
    (tmp_path / "estimates.jsonl").write_text(lines[0] + "\n" + lines[1][: len(lines[1]) // 2])
    main([str(runs)], json=True, quiet=True, out=str(tmp_path))
    second = json.loads(capsys.readouterr().out)
    assert second["reused_estimates"] == 1
    assert [r["estimates"] for r in second["candidates"]] == [r["estimates"] for r in first["candidates"]]
    main([str(runs)], json=True, quiet=True, out=str(tmp_path),
         estimators=EstimatorConfig(model_value=ModelValueConfig(max_starts=20)))
    third = json.loads(capsys.readouterr().out)
    assert third["reused_estimates"] == 0  # another config: every estimate made again
    assert all(r["details"]["own_model"]["starts"] <= 20 for r in third["candidates"])
