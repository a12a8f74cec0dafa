"""The report (``report.build_report``'s JSON-ready dict) as Markdown tables, in the paper's layouts.

Every interval carries its n and says what it is: ``65.0 [60.0, 70.0] (n=5)`` is a 95% bootstrap interval,
``65.0 (range 60.0..70.0, n=3)`` the range of fewer runs than an interval needs (``statistics.MIN_RUNS``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def interval(s: dict[str, Any], digits: int = 1, n: str | None = None) -> str:
    """A statistic with its interval, or its range, or alone, as ``s['kind']`` says; ``n`` appended."""
    v, lo, hi = (f"{s[k]:.{digits}f}" for k in ("value", "low", "high"))
    tail = f", n={n}" if n is not None else ""
    if s.get("kind") == "range":
        return f"{v} (range {lo}..{hi}{tail})"
    if s.get("kind") == "none":
        return f"{v} (no interval{tail})"
    return f"{v} [{lo}, {hi}]" + (f" (n={n})" if n is not None else "")


def cell(stats: dict[str, Any] | None, key: str = "mean", digits: int = 1) -> str:
    """One configuration's statistic with its interval and its number of seeds."""
    return "-" if stats is None else interval(stats[key], digits, str(stats["n"]))


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _premise(p: dict[str, float] | None) -> list[str]:
    return ["-"] * 3 if not p else [_num(p.get(k), 2) for k in ("spearman", "violation_rate", "return_gap")]


def _offline(estimate: dict[str, Any] | None) -> str:
    if estimate is None:
        return "-"
    return f"{estimate['mean']:.1f} (n={estimate['n']})" + (" chosen" if estimate["chosen"] else "")


def _configurations(report: dict[str, Any]) -> str:
    offline = [r["offline_estimate"]["estimator"] for r in report["configurations"] if r.get("offline_estimate")]
    rows = [[r["configuration"] + (f" ({len(r['unfinished'])} unfinished)" if r["unfinished"] else ""),
             r["measure"].replace("_mean", "").replace("normalized_", ""), " ".join(map(str, r["seeds"])),
             cell(r["statistics"], "mean"), cell(r["statistics"], "iqm"),
             *([_offline(r.get("offline_estimate"))] if offline else []), *_premise(r["premise"]),
             ", ".join(r["score_reference"])] for r in report["configurations"]]
    head = ["configuration", "measure", "seeds", "mean", "IQM"]
    head += [f"offline estimate (select `{offline[0]}`, mean over seeds)"] if offline else []
    return "### Per configuration (mean and IQM over seeds)\n\n" + table(
        [*head, "premise spearman", "violation rate", "return gap", "reference"], rows)


def _premise_kinds(report: dict[str, Any]) -> str:
    """Per configuration, each penalty kind's Spearman with the true error on the policy's own states."""
    kinds = list(dict.fromkeys(k for r in report["premise_kinds"] for k in r["spearman"]))
    body = [[r["configuration"], r["trained"] or "-", f"{r['best']} ({r['spearman'][r['best']]:.2f})",
             str(r["runs"]), *(_num(r["spearman"].get(k), 2) for k in kinds)] for r in report["premise_kinds"]]
    return ("### Which penalty tracked the model's error (Spearman of u with the true one-step error on the "
            "policy's own states, final evaluation, mean over runs; Lu et al. 2022)\n\n"
            + table(["configuration", "trains", "best", "runs", *kinds], body))


def _paper(row: dict[str, Any]) -> str:
    """The paper's number, marked where the row's data is not the version it was measured on (D4RL v0)."""
    if row["paper_mopo"] is None:
        return "-"
    on = row["paper_data"].split()[-1]
    return _num(row["paper_mopo"]) + ("" if row["data_version"] == on else f" (paper on {on})")


def _table1(report: dict[str, Any]) -> str:
    methods = sorted({m for row in report["table1"] for m in row["methods"]},
                     key=lambda m: (m != "MOPO", m == "MBPO", m))
    body = [[row["dataset"], row["env"], *(cell(row["methods"].get(m)) for m in methods), _paper(row),
             row["data"], ", ".join(row["reference"])] for row in report["table1"]]
    return ("### Table 1: normalised score per dataset, mean over seeds (the paper's layout; paper: D4RL v0, "
            "6 seeds; one row per dataset's bytes; each row normalised by its own reference)\n\n"
            + table(["dataset", "environment", *methods, "paper MOPO", "data", "reference"], body))


def _aggregates(report: dict[str, Any]) -> str:
    body = [[a["method"], str(len(a["tasks"])), f"{a['n']} ({_per_task(a['runs'].values())} per task)",
             interval(a["iqm"]), interval(a["mean"])] for a in report["aggregates"]]
    return ("### Across tasks (normalised score; every task of a method, on the runs each task has; the mean weighs "
            "tasks equally, the IQM pools runs)\n\n"
            + table(["method", "tasks", "runs (n)", "IQM", "mean"], body))


def _per_task(counts: Any) -> str:
    low, high = min(counts), max(counts)
    return str(low) if low == high else f"{low}-{high}"


def _improvement(report: dict[str, Any]) -> str:
    body = [[p["x"], p["y"], str(len(p["tasks"])), f"{p['n_x']} vs {p['n_y']}", interval(p, 2)]
            for p in report["probability_of_improvement"]]
    return ("### Probability of improvement P(X > Y) (Agarwal et al. 2021)\n\n"
            + table(["X", "Y", "tasks", "runs (n)", "P(X > Y)"], body))


def _ood(report: dict[str, Any]) -> str:
    body = [[r["task"], _dataset(r, report), str(r["rollout_length"] or "-"), f"{r['penalty_coef']:g}",
             _num(r["batch_mean"]), _num(r["batch_max"]), cell(r["mopo"]), cell(r["mbpo"]), r["method"],
             r["mbpo_method"] or "-"] for r in report["ood"]]
    return ("### Out-of-distribution tasks (average return, mean over seeds; paper Table 2)\n\n" + table(
        ["environment", "dataset", "h", "lambda", "batch mean", "batch max", "MOPO", "MBPO (lambda 0)",
         "MOPO method", "MBPO method (MOPO's settings but lambda)"], body))


def _dataset(row: dict[str, Any], report: dict[str, Any]) -> str:
    """The file's name, or the dataset's label where another dataset shares the name."""
    label = next(d["label"] for d in report["datasets"] if d["key"] == row["data_key"])
    return label if label != Path(row["dataset"]).stem else Path(row["dataset"]).name


def _code_versions(report: dict[str, Any]) -> str:
    from mopo_lightning.analysis.provenance import libraries

    body = [[v["code"], libraries(v), str(v["runs"])] for v in report["code_versions"]]
    return "### Code versions\n\n" + table(["code", "libraries", "runs"], body)


def _notes(report: dict[str, Any]) -> list[str]:
    notes = [f"- left out: {r['run']}: {r['reason']}" for r in report["left_out"]]
    notes += [f"- {line}" for line in report.get("dataset_notes", [])]
    notes += [f"- OOD {r['configuration']}: no batch statistics: {r['batch_note']}" for r in report["ood"]
              if r.get("batch_note")]
    for r in report["configurations"]:
        if r["evaluations_per_seed"]:
            notes.append(f"- {r['configuration']}: seeds have {' or '.join(map(str, r['evaluations_per_seed']))} "
                         "evaluations; its learning curve's band covers the points every seed reached, the dashed "
                         "tail fewer seeds")
        for run in r["unfinished"]:
            notes.append(f"- included unfinished: {run} (its latest evaluation stands as its score)")
    return notes


def markdown(report: dict[str, Any]) -> str:
    """Every section of the report that has rows."""
    s = report["settings"]
    runs = "unfinished runs included, marked" if s["include_unfinished"] else "finished runs only"
    head = (f"Score: {s['score']}; {runs}. "
            f"{s['interval']} Bootstrap: {s['bootstrap_reps']} replications, seed {s['bootstrap_seed']}. "
            f"Score reference(s): {', '.join(report['score_references']) or '-'}.")
    parts = [head]
    if report["configurations"]:
        parts.append(_configurations(report))
    if report.get("premise_kinds"):
        parts.append(_premise_kinds(report))
    if report["table1"]:
        parts.append(_table1(report))
    if report["ood"]:
        parts.append(_ood(report))
    if report["aggregates"]:
        parts.append(_aggregates(report))
    if report["probability_of_improvement"]:
        parts.append(_improvement(report))
    if report.get("code_versions"):
        parts.append(_code_versions(report))
    if notes := _notes(report):
        parts.append("### Notes\n\n" + "\n".join(notes))
    if report.get("figures"):
        parts.append("### Figures\n\n" + "\n".join(f"![{Path(f).stem}]({Path(f).name})" for f in report["figures"]))
    if not report["configurations"]:
        parts.insert(1, "no finished runs with evaluations" + ("" if s["include_unfinished"] else
                                                              " (--include_unfinished shows the others)"))
    return "\n\n".join(parts)
