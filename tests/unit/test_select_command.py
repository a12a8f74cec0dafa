"""``select``'s choice and its measurement, on plain rows (no runs, no models): each estimator's choice reads
estimates only; the online scores come after it, into the DOPE metrics, the choice's online score and the
Markdown."""

from __future__ import annotations

import pytest

from mopo_lightning.selection.estimators import EstimatorConfig
from mopo_lightning.selection.fqe import FQEConfig
from mopo_lightning.selection.render import markdown
from mopo_lightning.selection.selector import SelectConfig, choose, measure


def row(name: str, group: str, online: float | None, **estimates: float) -> dict:
    return {"candidate": name, "run": f"runs/{name}", "epoch": None, "method": "m", "seed": 0, "group": group,
            "estimates": estimates, "online": online, "chosen": False}


ROWS = [row("a", "d1", 40.0, own_mean=3.0, eval_mean=9.0), row("b", "d1", 10.0, own_mean=5.0, eval_mean=1.0),
        row("c", "d1", 20.0, own_mean=4.0, eval_mean=2.0), row("d", "d2", None, own_mean=1.0, eval_mean=1.0)]


def test_each_estimator_chooses_its_own_maximum_per_group():
    assert choose(ROWS, "own_mean") == {"d1": "b", "d2": "d"}
    assert choose(ROWS, "eval_mean") == {"d1": "a", "d2": "d"}
    assert choose(ROWS, "fqe") == {}  # not computed: no choice


def test_metrics_and_the_choice_online_per_estimator():
    choices = {name: choose(ROWS, name) for name in ("own_mean", "eval_mean")}
    metrics = measure(ROWS, choices)
    (own,) = metrics["own_mean"]["groups"]  # d2 has no online score
    assert own["group"] == "d1" and own["n"] == 3
    assert own["spearman"] == pytest.approx(-1.0)  # ranks (1, 3, 2) against (3, 1, 2): 1 - 6 * 8 / 24
    assert own["regret"]["1"] == pytest.approx((40 - 10) / (40 - 10))  # b is the worst online
    assert own["regret"]["3"] is None  # k >= n: undefined
    assert (own["chosen_online"], own["best_online"], own["worst_online"]) == (10.0, 40.0, 10.0)
    (ev,) = metrics["eval_mean"]["groups"]
    assert ev["spearman"] == pytest.approx(1.0) and ev["regret"]["1"] == 0.0 and ev["chosen_online"] == 40.0
    assert ev["mean_absolute_error"] == pytest.approx((31 + 9 + 18) / 3)


def test_markdown_names_choice_failures_and_metrics():
    rows = [dict(r) for r in ROWS] + [{**row("e", "d1", None), "error": "OSError: no sac/last.ckpt"}]
    choices = {name: choose(rows, name) for name in ("own_mean", "eval_mean")}
    for r in rows:
        r["chosen"] = choices["eval_mean"].get(r["group"]) == r["candidate"]
    selection = {"config": {**SelectConfig().__dict__, "estimators": {
                     "model_value": EstimatorConfig().model_value.__dict__}},
                 "estimators": {"own_mean": "own", "eval_mean": "eval"}, "evaluation_models": {},
                 "candidates": rows, "choices": choices, "metrics": measure(rows, choices),
                 "left_out": [{"run": "x", "reason": "failed"}]}
    text = markdown(selection)
    assert text.count("**chosen**") == 2 and "failed: OSError" in text and "regret@3" in text
    assert "Left out: 1" in text and "pooled (1 datasets)" in text


def test_config_refuses_what_cannot_be_computed():
    with pytest.raises(ValueError, match="choose_by"):
        SelectConfig(choose_by="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_updates"):
        SelectConfig(choose_by="fqe")
    with pytest.raises(ValueError, match="evaluation model"):
        SelectConfig(choose_by="eval_min", estimators=EstimatorConfig(evaluation_model=False))
    SelectConfig(choose_by="fqe", estimators=EstimatorConfig(fqe=FQEConfig(num_updates=10)))
