"""``report`` cannot silently put a wrong number in a cell (issue 30): a cell is keyed by everything that defines
it, a dataset is its bytes, a method one setting across tasks, an interval's n is per task.

Each case of the audit is built from synthetic ``results.json`` / ``run.json`` files (``make_run``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from test_report import jump_dataset

from mopo_lightning.analysis.figures import heat_map_grids
from mopo_lightning.analysis.tables import markdown
from mopo_lightning.commands.cli import main
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.report import Settings, build_report, figure_data


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def make_run(root: Path, name: str, *, task: str = "hopper", dataset: str = "hopper-medium-replay-v2", seed: int = 0,
             method: str | None = "MOPO", h: int = 5, lam: float = 1.0, score: float = 50.0,
             returns: float | None = None, data_sha: str | None = "default", epochs: int = 2,
             keys: dict | None = None, dynamics: dict | None = None, reference: str | None = None,
             provenance: dict | None = None, premise: dict | None = None) -> Path:
    """A finished run as ``fit`` records it: results.json (planned budget, stage 1's data hash) and run.json."""
    spec = get_task(task)
    run_dir = root / "checkpoints" / name
    run_dir.mkdir(parents=True)
    data_sha = sha(dataset) if data_sha == "default" else data_sha
    upe = (keys or {}).get("data.updates_per_epoch", 500)
    fields = {"version": 2, "data.sha256": data_sha, "dynamics.max_time": (keys or {}).get("dynamics.max_time")}
    stage1 = {"fingerprint_fields": fields, **({"cache_entry": "x"} if dynamics is None else dynamics)}
    scored = reference != "none"
    results = {"task": task, "dataset": dataset, "seed": seed, "method": method, "penalty_coef": lam,
               "rollout_length": h, "status": "finished", "seconds": {},
               "planned": {"stage": "all", "epochs": epochs, "sac_updates": epochs * upe, "evaluations": epochs},
               "evaluations": [{"sac_updates": epochs * upe, "return_mean": score * 10 if returns is None else returns,
                                "return_std": 1.0, "normalized_score": score if scored else None,
                                **({"premise": premise} if premise else {})}],
               "final_premise": premise, "dynamics": stage1}
    results |= {"score_reference": reference} if reference else {}
    results |= {"provenance": provenance} if provenance else {}
    identity = {"seed_everything": seed, "data.seed": seed, "data.task": task, "data.dataset": None,
                "data.path": dataset, "data.mode": "transitions", "data.max_rows": None, "data.updates_per_epoch": upe,
                "model.obs_dim": spec.obs_dim, "model.act_dim": spec.act_dim, "mopo.rollout_length": h,
                "mopo.penalty_coef": lam, "mopo.penalty_kind": "aleatoric", "mopo.penalty_units": "raw",
                "mopo.real_ratio": 0.05, "evaluation.num_episodes": 10, "dynamics.max_time": None,
                "dynamics.max_epochs": 50, "method": method, "collect.path": f"data/{task}.hdf5", **(keys or {})}
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "run.json").write_text(json.dumps(identity))
    return run_dir


def report(root: Path) -> dict:
    return build_report([root], Settings(reps=100))[0]


def test_v0_and_v2_of_one_dataset_are_two_rows_and_the_papers_number_is_marked(tmp_path):
    make_run(tmp_path, "v0", dataset="hopper-medium-replay-v0", score=60.0)
    make_run(tmp_path, "v2", dataset="hopper-medium-replay-v2", score=30.0)
    out = report(tmp_path)
    rows = {r["data"]: r for r in out["table1"]}
    assert sorted(rows) == ["hopper-medium-replay-v0", "hopper-medium-replay-v2"]
    assert {r["dataset"] for r in rows.values()} == {"mixed"}  # one kind, two rows
    assert rows["hopper-medium-replay-v0"]["methods"]["MOPO"]["mean"]["value"] == 60.0
    assert rows["hopper-medium-replay-v2"]["methods"]["MOPO"]["mean"]["value"] == 30.0
    v2 = rows["hopper-medium-replay-v2"]
    assert v2["paper_mopo"] == 67.5 and v2["paper_data"] == "D4RL v0" and v2["data_version"] == "v2"
    text = markdown(out)
    assert "| 67.5 | hopper-medium-replay-v0 | D4RL |" in text
    assert "| 67.5 (paper on v0) | hopper-medium-replay-v2 | D4RL |" in text


def test_a_d4rl_name_beside_a_file_of_the_same_kind_is_two_rows(tmp_path):
    make_run(tmp_path, "d4rl", dataset="hopper-medium-replay-v2", score=60.0)
    make_run(tmp_path, "file", dataset="data/hopper-mixed.hdf5", score=10.0)
    rows = {r["data"]: r for r in report(tmp_path)["table1"]}
    assert sorted(rows) == ["hopper-medium-replay-v2", "hopper-mixed"]
    assert rows["hopper-medium-replay-v2"]["paper_mopo"] == 67.5 and rows["hopper-mixed"]["paper_mopo"] is None
    assert rows["hopper-mixed"]["methods"]["MOPO"]["mean"]["value"] == 10.0


def test_one_file_name_in_two_folders_is_two_datasets_in_every_table(tmp_path):
    premise = {"penalty_kind": "aleatoric", "aleatoric/spearman": 0.5, "llv/spearman": 0.1}
    for folder, score in (("a", 10.0), ("b", 90.0)):
        make_run(tmp_path, f"{folder}-s0", dataset=f"{folder}/hopper-mixed.hdf5", method=None, score=score,
                 premise=premise)
    out = report(tmp_path)
    assert [d["label"] for d in out["datasets"]] == ["a/hopper-mixed", "b/hopper-mixed"]
    assert [r["configuration"] for r in out["configurations"]] == [
        "hopper a/hopper-mixed h5 lam1 aleatoric", "hopper b/hopper-mixed h5 lam1 aleatoric"]
    assert [r["data"] for r in out["table1"]] == ["a/hopper-mixed", "b/hopper-mixed"]
    (agg,) = out["aggregates"]
    assert agg["runs"] == {"hopper a/hopper-mixed": 1, "hopper b/hopper-mixed": 1}
    assert agg["mean"]["value"] == 50.0  # two tasks' means, not one task of two runs
    assert [r["configuration"] for r in out["premise_kinds"]] == [r["configuration"] for r in out["configurations"]]
    _, used = build_report([tmp_path], Settings(reps=50))
    assert [f["panel"] for f in figure_data(used, out)] == ["hopper a/hopper-mixed", "hopper b/hopper-mixed"]


def test_one_content_under_two_paths_is_one_dataset(tmp_path):
    same = sha("bytes")
    make_run(tmp_path, "s0", dataset="a/hopper-mixed.hdf5", data_sha=same, score=10.0)
    make_run(tmp_path, "s1", dataset="copy/hopper-mixed-2.hdf5", data_sha=same, seed=1, score=20.0)
    out = report(tmp_path)
    (row,) = out["configurations"]
    assert row["seeds"] == [0, 1] and row["data"] == "hopper-mixed"
    assert any("the same bytes" in n and "copy/hopper-mixed-2.hdf5" in n for n in out["dataset_notes"])


def test_a_path_whose_bytes_changed_is_two_datasets_and_says_so(tmp_path):
    make_run(tmp_path, "s0", dataset="data/hopper-mixed.hdf5", data_sha=sha("old"), score=10.0)
    make_run(tmp_path, "s1", dataset="data/hopper-mixed.hdf5", data_sha=sha("new"), seed=1, score=90.0)
    out = report(tmp_path)
    labels = [r["data"] for r in out["configurations"]]
    assert labels == [f"hopper-mixed@{sha('new')[:8]}", f"hopper-mixed@{sha('old')[:8]}"]
    assert [r["statistics"]["n"] for r in out["configurations"]] == [1, 1]
    assert any(n.startswith("dataset data/hopper-mixed.hdf5: its bytes changed") for n in out["dataset_notes"])
    assert "its bytes changed between runs" in markdown(out)


def test_runs_without_a_hash_fall_back_to_the_name_marked(tmp_path):
    make_run(tmp_path, "s0", dataset="data/hopper-mixed.hdf5", data_sha=None)
    make_run(tmp_path, "s1", dataset="data/hopper-mixed.hdf5", data_sha=None, seed=1)
    out = report(tmp_path)
    assert out["configurations"][0]["seeds"] == [0, 1] and out["datasets"][0]["sha256"] is None
    assert out["dataset_notes"] == [
        "identified by name only (no SHA-256 recorded: runs older than the data's hash): hopper-mixed"]


def test_an_arm_at_two_budgets_is_two_methods_across_tasks(tmp_path):
    make_run(tmp_path, "hopper", task="hopper", dataset="hopper-medium-replay-v2", epochs=2000, score=60.0)
    make_run(tmp_path, "walker", task="walker2d", dataset="walker2d-medium-replay-v2", h=1, epochs=3, score=5.0)
    out = report(tmp_path)
    agg = {a["method"]: a["tasks"] for a in out["aggregates"]}
    assert agg == {"MOPO planned.sac_updates=1000000": ["hopper hopper-medium-replay-v2"],
                   "MOPO planned.sac_updates=1500": ["walker2d walker2d-medium-replay-v2"]}
    assert out["probability_of_improvement"] == []  # no task in common


def test_an_arm_pools_across_tasks_when_only_the_datasets_h_and_lambda_differ(tmp_path):
    make_run(tmp_path, "hopper", task="hopper", dataset="hopper-medium-replay-v2", score=60.0)
    make_run(tmp_path, "walker", task="walker2d", dataset="walker2d-medium-replay-v2", h=1, lam=2.5, score=20.0)
    (agg,) = report(tmp_path)["aggregates"]
    assert agg["method"] == "MOPO" and agg["mean"]["value"] == 40.0


def test_six_datasets_of_one_seed_show_ranges_and_no_interval(tmp_path):
    for task in ("hopper", "walker2d", "halfcheetah"):
        for kind in ("medium", "medium-replay"):
            dataset = f"{task}-{kind}-v2"
            make_run(tmp_path, f"{dataset}-MOPO", task=task, dataset=dataset, score=40.0 + len(kind))
            make_run(tmp_path, f"{dataset}-MBPO", task=task, dataset=dataset, method="MBPO", lam=0.0, score=20.0)
    out = report(tmp_path)
    assert [a["n"] for a in out["aggregates"]] == [6, 6]  # 6 runs each, but 1 per task
    assert {a[s]["kind"] for a in out["aggregates"] for s in ("iqm", "mean")} == {"range"}
    assert {p["kind"] for p in out["probability_of_improvement"]} == {"none"}
    assert "in every task" in out["settings"]["interval"]
    section = markdown(out).split("### Across tasks")[1].split("###")[0]
    assert "(range" in section and "[" not in section and "6 (1 per task)" in section


def test_the_ood_mbpo_column_never_mixes_two_budgets(tmp_path):
    jump_dataset(tmp_path / "data" / "hc-sac.hdf5")
    ood = {"task": "halfcheetah-jump", "dataset": "data/hc-sac.hdf5", "method": None, "reference": "none",
           "data_sha": None}
    make_run(tmp_path, "mopo-s0", **ood, returns=100.0)
    make_run(tmp_path, "mopo-s1", **ood, seed=1, returns=200.0)
    make_run(tmp_path, "mbpo-short", **ood, lam=0.0, returns=80.0)
    make_run(tmp_path, "mbpo-long", **ood, lam=0.0, epochs=20, returns=300.0)
    (row,) = report(tmp_path)["ood"]
    assert row["mopo"]["n"] == 2 and row["mbpo"]["n"] == 1 and row["mbpo"]["mean"]["value"] == 80.0
    assert "planned.sac_updates=1000" in row["mbpo_method"] and "planned.sac_updates=1000" in row["method"]


def test_a_heat_map_over_two_real_ratios_is_two_maps(tmp_path):
    for ratio in (0.05, 0.5):
        for h in (1, 5):
            for lam in (0.5, 1.0):
                make_run(tmp_path, f"h{h}-l{lam}-r{ratio}", method=None, h=h, lam=lam, score=h * lam + 100 * ratio,
                         keys={"mopo.real_ratio": ratio})
    out, used = build_report([tmp_path], Settings(reps=50))
    grids = {key: values for key, values, _, _ in heat_map_grids(figure_data(used, out))}
    assert sorted(grids) == ["hopper hopper-medium-replay-v2 aleatoric mopo.real_ratio=0.05",
                             "hopper hopper-medium-replay-v2 aleatoric mopo.real_ratio=0.5"]
    assert grids["hopper hopper-medium-replay-v2 aleatoric mopo.real_ratio=0.5"].tolist() == [[50.5, 51.0],
                                                                                             [52.5, 55.0]]


def test_a_time_capped_stage_1_is_another_method(tmp_path):
    cap = {"dynamics.max_time": "00:00:05:00"}  # set for every run; it fired for one model only
    make_run(tmp_path, "mopo-capped", keys=cap, dynamics={"reproducible": False}, score=10.0)
    make_run(tmp_path, "mopo-s1", keys=cap, seed=1, score=60.0)  # its own model, cached: not capped
    make_run(tmp_path, "mopo-walker", task="walker2d", dataset="walker2d-medium-replay-v2", keys=cap, score=40.0)
    make_run(tmp_path, "mbpo-shared", method="MBPO", lam=0.0, keys=cap, dynamics={"loaded": True},
             score=5.0)  # loaded the capped model (--dynamics_checkpoint): results.json cannot tell
    make_run(tmp_path, "mbpo-walker", task="walker2d", dataset="walker2d-medium-replay-v2", method="MBPO", lam=0.0,
             keys=cap, score=7.0)
    out = report(tmp_path)
    agg = {a["method"]: a["runs"] for a in out["aggregates"]}
    assert agg == {"MOPO stage1.time_capped=false": {"hopper hopper-medium-replay-v2": 1,
                                                     "walker2d walker2d-medium-replay-v2": 1},
                   "MOPO stage1.time_capped=true": {"hopper hopper-medium-replay-v2": 1},
                   "MBPO stage1.time_capped=false": {"walker2d walker2d-medium-replay-v2": 1},
                   "MBPO stage1.time_capped=null": {"hopper hopper-medium-replay-v2": 1}}


def test_minari_runs_enter_table_1_with_their_own_reference(tmp_path):
    make_run(tmp_path, "minari", task="hopper-v5", dataset="mujoco/hopper/medium-v0", score=70.0,
             reference="minari:mujoco/hopper/medium-v0")
    make_run(tmp_path, "d4rl", task="hopper", dataset="hopper-medium-v2", score=30.0)
    out = report(tmp_path)
    rows = {r["env"]: r for r in out["table1"]}
    assert sorted(rows) == ["hopper", "hopper-v5"] and {r["dataset"] for r in rows.values()} == {"medium"}
    minari = rows["hopper-v5"]
    assert minari["reference"] == ["minari:mujoco/hopper/medium-v0"] and minari["paper_mopo"] is None
    assert minari["methods"]["MOPO"]["mean"]["value"] == 70.0
    assert rows["hopper"]["paper_mopo"] == 28.0 and rows["hopper"]["reference"] == ["D4RL"]
    assert out["ood"] == []  # a task without D4RL scores is no OOD task
    row = "| medium | hopper-v5 | 70.0 (range 70.0..70.0, n=1) | - | mujoco/hopper/medium-v0 | minari:"
    assert row in markdown(out)


def provenance(commit: str, torch: str = "2.5.1") -> dict:
    return {"package": {"name": "mopo-lightning", "version": "0.1.0", "commit": commit, "dirty": False,
                        "source": "git"}, "libraries": {"python": "3.11.7", "torch": torch}, "device": {"gpu": "x"}}


def test_code_versions_are_listed_and_a_mix_is_a_warning(tmp_path, capsys):
    make_run(tmp_path, "s0", provenance=provenance("a" * 40))
    make_run(tmp_path, "s1", seed=1, provenance={**provenance("a" * 40), "device": {"gpu": "y"}})
    make_run(tmp_path, "s2", seed=2, provenance=provenance("a" * 40, torch="2.6.0"))
    make_run(tmp_path, "s3", seed=3, provenance=provenance("b" * 40))
    make_run(tmp_path, "s4", seed=4)
    versions = report(tmp_path)["code_versions"]
    assert [(v["code"], v["libraries"] and v["libraries"]["torch"], v["runs"]) for v in versions] == [
        ("mopo-lightning 0.1.0 (aaaaaaaaaa)", "2.5.1", 2), ("mopo-lightning 0.1.0 (aaaaaaaaaa)", "2.6.0", 1),
        ("mopo-lightning 0.1.0 (bbbbbbbbbb)", "2.5.1", 1), ("unrecorded", None, 1)]
    main(["report", str(tmp_path), "--reps", "50", "--out", str(tmp_path / "out")])
    text, err = capsys.readouterr()
    (line,) = [x for x in err.splitlines() if x.startswith("warning: runs come from")]
    assert line.startswith("warning: runs come from 4 code versions") and "; unrecorded (1 run)" in line
    assert "### Code versions" in text and "| unrecorded | - | 1 |" in text
    assert json.loads((tmp_path / "out" / "report.json").read_text())["code_versions"] == versions


def test_one_version_gives_no_warning(tmp_path, capsys):
    make_run(tmp_path, "s0", provenance=provenance("a" * 40))
    make_run(tmp_path, "s1", seed=1, provenance=provenance("a" * 40))
    main(["report", str(tmp_path), "--reps", "50"])
    assert "code versions" not in capsys.readouterr().err


def test_two_cells_that_would_print_as_one_label_are_refused(tmp_path):
    make_run(tmp_path, "named", method="h5 lam1 aleatoric", score=10.0)
    make_run(tmp_path, "unnamed", method=None, score=90.0)
    with pytest.raises(ValueError, match="would print as 'hopper hopper-medium-replay-v2 h5 lam1 aleatoric'"):
        report(tmp_path)
    with pytest.raises(SystemExit, match="the report refuses rather than merge them"):
        main(["report", str(tmp_path), "--reps", "50"])


def test_a_run_resumed_under_other_code_is_its_own_version(tmp_path):
    make_run(tmp_path, "s0", provenance=provenance("a" * 40))
    resumed = make_run(tmp_path, "s1", seed=1, provenance=provenance("a" * 40))
    data = json.loads((resumed / "results.json").read_text())
    data["provenance_resumes"] = [provenance("b" * 40)]
    (resumed / "results.json").write_text(json.dumps(data))
    assert [(v["code"], v["runs"]) for v in report(tmp_path)["code_versions"]] == [
        ("mopo-lightning 0.1.0 (aaaaaaaaaa)", 1), ("mopo-lightning 0.1.0 (aaaaaaaaaa), resumed under other code", 1)]


def test_a_budget_is_named_once_but_every_difference_splits(tmp_path):
    make_run(tmp_path, "s0", method=None, score=10.0)
    other = make_run(tmp_path, "s0-more-evals", method=None, score=90.0)
    data = json.loads((other / "results.json").read_text())
    data["planned"]["evaluations"] = 10  # the same SAC updates, evaluated more often
    (other / "results.json").write_text(json.dumps(data))
    make_run(tmp_path, "long", method=None, epochs=20, score=50.0)
    assert sorted(r["method"] for r in report(tmp_path)["configurations"]) == [
        "h5 lam1 aleatoric planned.evaluations=10 planned.sac_updates=1000",
        "h5 lam1 aleatoric planned.evaluations=2 planned.sac_updates=1000",
        "h5 lam1 aleatoric planned.evaluations=20 planned.sac_updates=10000"]
