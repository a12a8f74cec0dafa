"""``select``'s choice and its measurement, on plain rows (no runs, no models): the choice reads estimates only;
the online scores come after it, into the DOPE metrics and the Markdown."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from mopo_lightning.selection.candidates import choose, markdown, measure


def row(run: str, group: str, estimate: float | None) -> dict:
    return {"run": run, "method": run, "group": group, "estimate": estimate,
            "estimate_min": None if estimate is None else estimate - 1, **({} if estimate else {"error": "x"})}


def test_choice_per_group_then_metrics():
    rows = [row("a", "d1", 3.0), row("b", "d1", 5.0), row("c", "d1", None), row("d", "d2", 1.0)]
    choose(rows)
    assert [r["chosen"] for r in rows] == [False, True, False, True]
    online = {"a": 40.0, "b": 10.0, "c": 99.0, "d": None}
    runs = {k: SimpleNamespace(value=lambda last, v=v: v, path=Path(k)) for k, v in online.items()}
    metrics = measure(rows, runs, last=1)
    (group,) = metrics["groups"]  # d2 has no online score
    assert group["group"] == "d1" and group["n"] == 2 and group["spearman"] == -1.0
    assert group["regret"]["1"] > 0  # the pick (b) is the worse of the two online
    selection = {"estimator": {"method": "m", "fqe_updates": 0}, "candidates": rows, "metrics": metrics,
                 "left_out": [{"run": "x", "reason": "failed"}]}
    text = markdown(selection)
    assert text.count("**chosen**") == 2 and "failed: x" in text and "regret@1" in text and "Left out: 1" in text


def test_no_online_scores_no_metrics():
    rows = [row("a", "d1", 1.0)]
    choose(rows)
    assert measure(rows, {"a": SimpleNamespace(value=lambda last: None)}, last=1) is None
