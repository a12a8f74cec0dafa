"""The run record: its planned budget for every limit, its status for every end, and a resume that never loses it."""

from __future__ import annotations

import json
from datetime import timedelta
from types import SimpleNamespace

import pytest
from lightning.pytorch.callbacks import Timer

from mopo_lightning.callbacks.results import RunResults
from mopo_lightning.training.run_record import planned_budget, record_end, record_stage1_end


@pytest.mark.parametrize(("trainer", "expected"), [
    ({"max_epochs": 2}, {"epochs": 2, "sac_updates": 80, "evaluations": 2}),
    ({}, {"epochs": 1000, "sac_updates": 40_000, "evaluations": 1000}),  # Lightning's default
    ({"max_epochs": -1}, {"epochs": None, "sac_updates": None, "evaluations": None}),
    # max_steps counts optimizer steps, 3 per SAC update: 150 steps end after 50 updates, in the second epoch
    ({"max_steps": 150}, {"epochs": None, "sac_updates": 50, "evaluations": 2, "max_steps": 150}),
    ({"max_steps": 151, "max_epochs": 5}, {"epochs": 5, "sac_updates": 51, "evaluations": 2, "max_steps": 151}),
    ({"max_steps": 9_000, "max_epochs": 1}, {"epochs": 1, "sac_updates": 40, "evaluations": 1, "max_steps": 9_000}),
    ({"max_steps": -1, "max_epochs": 3}, {"epochs": 3, "sac_updates": 120, "evaluations": 3}),
    # a time limit alone lifts Lightning's default epoch cap: no number of updates is planned
    ({"max_time": "00:00:01:00"}, {"epochs": None, "sac_updates": None, "evaluations": None,
                                   "max_time": "00:00:01:00"}),
    ({"max_time": {"minutes": 5}, "max_epochs": 2}, {"epochs": 2, "sac_updates": 80, "evaluations": 2,
                                                     "max_time": {"minutes": 5}}),
    ({"max_time": timedelta(hours=25, seconds=3)}, {"epochs": None, "sac_updates": None, "evaluations": None,
                                                    "max_time": "01:01:00:03"}),
])
def test_the_planned_budget_names_the_limit_of_every_kind(trainer, expected):
    assert planned_budget("all", trainer, updates_per_epoch=40, every_n_evals=1) == {"stage": "all", **expected}


def test_evaluations_follow_every_n_epochs():
    assert planned_budget("all", {"max_epochs": 5}, 40, 2)["evaluations"] == 2
    assert planned_budget("dynamics", {"max_steps": 5}, 40, 1) == {"stage": "dynamics"}


def _results(tmp_path, trainer: dict, **header) -> RunResults:
    return RunResults(tmp_path / "results.json", {"planned": planned_budget("all", trainer, 40, 1), **header})


def _timer(duration: dict) -> SimpleNamespace:
    return SimpleNamespace(callbacks=[Timer(duration=duration)])


NO_TIMER = SimpleNamespace(callbacks=[])


def test_finished_only_when_the_limiting_budget_was_done(tmp_path):
    steps = _results(tmp_path, {"max_steps": 150})
    record_end(steps, NO_TIMER, 50)
    assert steps.data["status"] == "finished"
    record_end(steps, NO_TIMER, 49)
    assert steps.data["status"] == "stopped" and "49 of 50" in steps.data["status_detail"]["reason"]
    # a max_time cut: stopped, naming max_time, with or without an epoch budget
    for trainer in ({"max_time": "00:00:00:01"}, {"max_time": "00:00:00:01", "max_epochs": 3}):
        timed = _results(tmp_path, trainer)
        record_end(timed, _timer({"seconds": 0}), 7)
        assert timed.data["status"] == "stopped"
        assert timed.data["status_detail"]["reason"].startswith("trainer.max_time (00:00:00:01) ended the run at 7")
    # the budget done before the clock ran out: finished; an unlimited run a callback ended: stopped
    done = _results(tmp_path, {"max_time": "00:00:00:01", "max_epochs": 3})
    record_end(done, _timer({"seconds": 0}), 120)
    assert done.data["status"] == "finished"
    unlimited = _results(tmp_path, {"max_epochs": -1})
    record_end(unlimited, _timer({"hours": 1}), 7)
    assert unlimited.data["status"] == "stopped" and "callback" in unlimited.data["status_detail"]["reason"]


RECORD = {
    "task": "hopper", "threads": {"sac": 1}, "status": "finished",
    "planned": {"stage": "all", "epochs": 3, "sac_updates": 120, "evaluations": 3},
    "evaluations": [{"sac_updates": 40 * i, "return_mean": float(i), "return_std": 0.0, "normalized_score": 0.1 * i,
                     "premise": {"spearman": i}} for i in (1, 2, 3)],
    "final_normalized_score": 0.3, "final_return": 3.0, "final_premise": {"spearman": 3},
    "dynamics": {"loaded": False, "fingerprint": "f" * 16, "seconds": 9.0},
    "seconds": {"dynamics": 9.0, "policy": 30.0}, "score_reference": "D4RL",
    "penalty": {"penalty_kind": "aleatoric", "penalty_coef": 1.0},
    "provenance": {"package": {"version": "0.1.0", "commit": "a" * 40}},
}


def _resume(tmp_path, previous: dict, trainer: dict, provenance: dict | None = None) -> RunResults:
    (tmp_path / "results.json").write_text(json.dumps(previous))
    results = _results(tmp_path, trainer, threads={"sac": 2}, provenance=provenance or previous["provenance"])
    results.restore()
    results.record_stage1({"loaded": True, "fingerprint": "f" * 16, "seconds": 9.0})  # a resume loads its own
    return results


def test_a_resume_past_its_budget_keeps_the_whole_record(tmp_path):
    """A finished 3-epoch run resumed with max_epochs=2 (or 3) trains nothing: every evaluation, the final score
    and premise, stage 1, the penalty and the budget it ran for stay; it stays finished."""
    for epochs in (2, 3):
        results = _resume(tmp_path, RECORD, {"max_epochs": epochs})
        assert results.data["status"] == "finished"  # stage 1 loaded: a finished record does not say running
        record_end(results, NO_TIMER, 120)  # Lightning skipped the loop: on_train_start never ran
        saved = json.loads((tmp_path / "results.json").read_text())
        assert saved == {**RECORD, "threads": {"sac": 2}}, epochs


@pytest.mark.parametrize("status", [{"status": "stopped", "status_detail": {"signal": 15}},
                                    {"status": "failed", "status_detail": {"error": "NonFiniteError: x"}}])
def test_an_ended_run_resumed_past_its_budget_keeps_its_end(tmp_path, status):
    results = _resume(tmp_path, {**RECORD, **status}, {"max_epochs": 2})
    assert results.data["status"] == "running"  # between stage 1 and SAC
    record_end(results, NO_TIMER, 120)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert {k: saved[k] for k in ("status", "status_detail", "planned")} == {**status, "planned": RECORD["planned"]}


def test_a_run_killed_after_its_last_checkpoint_is_finished_by_its_resume(tmp_path):
    results = _resume(tmp_path, {**RECORD, "status": "running"}, {"max_epochs": 2})
    record_end(results, NO_TIMER, 120)
    assert results.data["status"] == "finished" and results.data["planned"] == RECORD["planned"]


def test_a_resume_that_trains_records_its_budget_and_redoes_later_evaluations(tmp_path):
    results = _resume(tmp_path, {**RECORD, "status": "stopped", "status_detail": {"signal": 2}}, {"max_epochs": 5})
    trainer, module = SimpleNamespace(is_global_zero=True, logger=None), SimpleNamespace(sac_updates=80)
    results.on_train_start(trainer, module)  # resumed from the epoch-2 checkpoint
    data = results.data
    assert data["planned"]["sac_updates"] == 200 and data["status"] == "running" and "status_detail" not in data
    assert [e["sac_updates"] for e in data["evaluations"]] == [40, 80]  # the third is redone
    assert data["final_normalized_score"] == 0.2 and data["final_premise"] == {"spearman": 2}
    assert data["dynamics"] == RECORD["dynamics"] and data["penalty"] == RECORD["penalty"]
    record_end(results, NO_TIMER, 200)
    assert data["status"] == "finished"


def test_a_resume_with_other_code_is_recorded_beside_the_first(tmp_path):
    other = {"package": {"version": "0.2.0", "commit": "b" * 40}}
    results = _resume(tmp_path, RECORD, {"max_epochs": 3}, provenance=other)
    assert results.data["provenance"] == RECORD["provenance"] and results.data["provenance_resumes"] == [other]
    same = _resume(tmp_path, RECORD, {"max_epochs": 3})
    assert "provenance_resumes" not in same.data


def test_a_stage1_resume_of_a_full_run_finishes_nothing(tmp_path):
    results = _resume(tmp_path, {**RECORD, "status": "stopped", "status_detail": {"signal": 15}}, {})
    record_stage1_end(results)
    assert results.data["status"] == "stopped" and results.data["planned"] == RECORD["planned"]
    fresh = RunResults(tmp_path / "r2.json", {"planned": planned_budget("dynamics", {}, 40, 1)})
    record_stage1_end(fresh)
    assert fresh.data["status"] == "finished"


def test_a_finished_run_whose_resume_fails_before_training_stays_finished(tmp_path):
    from mopo_lightning.training.run_record import recorded

    results = _resume(tmp_path, RECORD, {"max_epochs": 2})
    with pytest.raises(RuntimeError), recorded(results, SimpleNamespace(started=True), resuming=True):
        raise RuntimeError("out of memory while building the model buffer")
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "finished"
    stopped = _resume(tmp_path, {**RECORD, "status": "stopped", "status_detail": {"signal": 15}}, {"max_epochs": 2})
    with pytest.raises(RuntimeError), recorded(stopped, SimpleNamespace(started=True), resuming=True):
        raise RuntimeError("boom")
    assert stopped.data["status"] == "failed"  # an unfinished run says what its latest start met
