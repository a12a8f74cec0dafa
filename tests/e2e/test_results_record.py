"""``results.json`` of real ``fit`` runs: it only grows on resume, names the budget that limits the run, says how
the run ended, and records what made its numbers (provenance)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import run_cli
from test_resume import workdir  # noqa: F401  (shared fixture: a tiny trained dynamics checkpoint)

from mopo_lightning.provenance import LIBRARIES, package_record


def _results(cwd: Path, run: str) -> dict:
    return json.loads((cwd / "checkpoints" / run / "results.json").read_text())


def _updates(cwd: Path, run: str) -> int:
    state = torch.load(cwd / "checkpoints" / run / "sac" / "last.ckpt", weights_only=True)
    return int(state["state_dict"]["sac_updates"])


def test_a_resume_at_or_past_its_budget_keeps_the_record_and_a_longer_one_grows_it(workdir):  # noqa: F811
    cwd, args = workdir
    run = [*args, "--run_name", "grows"]
    run_cli("fit", *run, "--trainer.max_epochs", "3", cwd=cwd)
    finished = _results(cwd, "grows")
    assert finished["status"] == "finished" and len(finished["evaluations"]) == 3
    assert finished["final_normalized_score"] == finished["evaluations"][-1]["normalized_score"] is not None
    assert finished["final_premise"] and finished["penalty"] and finished["dynamics"]["fingerprint"]
    # provenance: the layout report reads, this checkout's package, the run's threads
    provenance = finished["provenance"]
    assert provenance["package"] == package_record()
    assert list(provenance["libraries"]) == ["python", *LIBRARIES]
    assert provenance["device"]["threads"] == finished["threads"] and provenance["device"]["accelerator"] == "cpu"
    for epochs in ("2", "3"):  # past and at the budget: nothing trains, nothing of the record changes
        run_cli("fit", *run, "--trainer.max_epochs", epochs, "--ckpt_path", "last", cwd=cwd)
        assert _results(cwd, "grows") == finished, epochs
    run_cli("fit", *run, "--trainer.max_epochs", "4", "--ckpt_path", "last", cwd=cwd)
    grown = _results(cwd, "grows")
    assert grown["evaluations"][:3] == finished["evaluations"] and len(grown["evaluations"]) == 4
    assert grown["status"] == "finished" and grown["planned"]["sac_updates"] == 160 == _updates(cwd, "grows")
    assert grown["dynamics"] == finished["dynamics"] and grown["provenance"] == provenance


def test_a_step_limited_run_records_its_budget_and_finishes_it(workdir):  # noqa: F811
    """``trainer.max_steps`` counts optimizer steps, three per SAC update: 150 steps are 50 updates, ending in
    the second epoch of 40, whose end still evaluates."""
    cwd, args = workdir
    run_cli("fit", *args, "--run_name", "steps", "--trainer.max_epochs", "5", "--trainer.max_steps", "150", cwd=cwd)
    results = _results(cwd, "steps")
    assert results["planned"] == {"stage": "all", "epochs": 5, "max_steps": 150, "sac_updates": 50,
                                  "evaluations": 2}
    assert [e["sac_updates"] for e in results["evaluations"]] == [40, 50]
    assert results["status"] == "finished" and "status_detail" not in results


def test_a_run_cut_by_max_time_is_stopped_naming_it(workdir):  # noqa: F811
    cwd, args = workdir
    run_cli("fit", *args, "--run_name", "timed", "--trainer.max_epochs", "1000", "--trainer.max_time", "00:00:00:03",
            cwd=cwd)
    results = _results(cwd, "timed")
    assert results["planned"]["max_time"] == "00:00:00:03" and results["planned"]["sac_updates"] == 40_000
    assert results["status"] == "stopped"
    assert results["status_detail"]["reason"].startswith("trainer.max_time (00:00:00:03) ended the run at ")
