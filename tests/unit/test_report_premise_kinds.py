"""``report``'s calibration table: per configuration, which penalty kind ranked the true error best."""

from __future__ import annotations

import json
from pathlib import Path

from mopo_lightning.analysis.premise_kinds import premise_kinds
from mopo_lightning.analysis.tables import markdown
from mopo_lightning.commands.cli import main
from mopo_lightning.report import Settings, build_report


def write_run(root: Path, name: str, seed: int, kind: str, spearman: dict[str, float | None] | None) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    premise = None if spearman is None else {"penalty_kind": kind, "spearman": spearman.get(kind),
                                             **{f"{k}/spearman": v for k, v in spearman.items()}}
    evals = [{"sac_updates": 1000, "return_mean": 1.0, "return_std": 0.0, "normalized_score": 10.0 + seed,
              **({"premise": premise} if premise else {})}]
    data = {"task": "hopper", "dataset": "hopper-medium-replay-v2", "seed": seed, "evaluations": evals,
            "final_normalized_score": 10.0, "final_premise": premise, "status": "finished", "seconds": {},
            "penalty_coef": 1.0, "rollout_length": 5}
    (run_dir / "results.json").write_text(json.dumps(data))
    (run_dir / "run.json").write_text(json.dumps({"mopo.penalty_kind": kind, "seed_everything": seed}))
    return run_dir


def test_the_kind_with_the_highest_mean_spearman_over_seeds_is_named():
    rows = premise_kinds({
        "a": [{"penalty_kind": "aleatoric", "aleatoric/spearman": 0.2, "llv/spearman": 0.9, "loo_kl/spearman": 0.5},
              {"penalty_kind": "aleatoric", "aleatoric/spearman": 0.4, "llv/spearman": -0.3, "loo_kl/spearman": 0.5},
              None],
        "b": [None, {"penalty_kind": "llv"}],  # no kind measured: no row
        "c": [{"penalty_kind": "llv", "llv/spearman": None, "disagreement/spearman": float("nan"),
               "max_pairwise_diff/spearman": -0.1}],
    })
    assert [r["configuration"] for r in rows] == ["a", "c"]
    a, c = rows
    assert a["runs"] == 2 and a["trained"] == "aleatoric"
    assert list(a["spearman"]) == ["aleatoric", "llv", "loo_kl"]  # the registry's order
    assert abs(a["spearman"]["aleatoric"] - 0.3) < 1e-12 and abs(a["spearman"]["llv"] - 0.3) < 1e-12
    assert a["best"] == "loo_kl"  # mean 0.5 beats the single best seed (llv 0.9, mean 0.3)
    assert c["spearman"] == {"max_pairwise_diff": -0.1} and c["best"] == "max_pairwise_diff"  # null, NaN skipped


def test_the_report_has_a_section_naming_the_best_kind_per_configuration(tmp_path):
    write_run(tmp_path, "ale-s0", 0, "aleatoric", {"aleatoric": 0.1, "disagreement": 0.6, "llv": 0.3})
    write_run(tmp_path, "ale-s1", 1, "aleatoric", {"aleatoric": 0.3, "disagreement": 0.4, "llv": 0.7})
    write_run(tmp_path, "llv-s0", 0, "llv", {"aleatoric": 0.8, "disagreement": 0.2, "llv": 0.1})
    write_run(tmp_path, "none-s0", 0, "disagreement", None)
    report, _ = build_report([tmp_path], Settings(reps=50))
    by_kind = {r["trained"]: r for r in report["premise_kinds"]}
    assert set(by_kind) == {"aleatoric", "llv"}
    assert by_kind["aleatoric"]["best"] == "disagreement" and by_kind["aleatoric"]["runs"] == 2
    assert by_kind["llv"]["best"] == "aleatoric"
    text = markdown(report)
    section = text.split("### Which penalty tracked the model's error")[1].split("###")[0]
    assert "| configuration | trains | best | runs | aleatoric | disagreement | llv |" in section
    assert "| aleatoric | disagreement (0.50) | 2 | 0.20 | 0.50 | 0.50 |" in section
    assert "| llv | aleatoric (0.80) | 1 | 0.80 | 0.20 | 0.10 |" in section


def test_the_report_draws_one_calibration_figure_per_kind(tmp_path):
    from mopo_lightning.analysis.figures import calibration

    write_run(tmp_path, "ale-s0", 0, "aleatoric", {"aleatoric": 0.1, "disagreement": 0.6, "llv": 0.3})
    write_run(tmp_path, "llv-s0", 0, "llv", {"aleatoric": 0.8, "disagreement": 0.2, "llv": 0.1})
    report, _ = build_report([tmp_path], Settings(reps=50))
    path = calibration(report["premise_kinds"], tmp_path)
    assert path == tmp_path / "calibration.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
    assert calibration([], tmp_path / "none") is None  # no run measured the kinds: no figure
    main(["report", str(tmp_path), "--out", str(tmp_path / "out"), "--reps", "50"])
    assert "![calibration](calibration.png)" in (tmp_path / "out" / "report.md").read_text()
