"""The report (``report.build_report``'s JSON-ready dict) as Markdown tables, in the paper's layouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

D4RL_ORDER = ("random", "medium", "mixed", "medium-expert")


def cell(stats: dict[str, Any] | None, key: str = "mean", digits: int = 1) -> str:
    """``65.0 [60.0, 70.0] (n=2)``: a statistic with its 95% interval and the number of seeds."""
    if stats is None:
        return "-"
    s = stats[key]
    return f"{s['value']:.{digits}f} [{s['low']:.{digits}f}, {s['high']:.{digits}f}] (n={stats['n']})"


def interval(s: dict[str, float], digits: int = 1) -> str:
    return f"{s['value']:.{digits}f} [{s['low']:.{digits}f}, {s['high']:.{digits}f}]"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _premise(p: dict[str, float] | None) -> list[str]:
    return ["-"] * 3 if not p else [_num(p.get(k), 2) for k in ("spearman", "violation_rate", "return_gap")]


def markdown(report: dict[str, Any]) -> str:
    """Every section of the report that has rows."""
    s = report["settings"]
    parts = [(f"Score: {s['score']}; 95% intervals: {s['interval']}, {s['bootstrap_reps']} replications, "
              f"seed {s['bootstrap_seed']}. Score reference(s): {', '.join(report['score_references']) or '-'}.")]
    if report["duplicates_left_out"]:
        parts.append(f"Left out as repeats of a newer run's configuration and seed: "
                     f"{', '.join(report['duplicates_left_out'])}")
    rows = [[r["configuration"], r["measure"].replace("_mean", "").replace("normalized_", ""),
             " ".join(map(str, r["seeds"])), cell(r["statistics"], "mean"), cell(r["statistics"], "iqm"),
             *_premise(r["premise"]), ", ".join(r["score_reference"])] for r in report["configurations"]]
    if rows:
        parts.append("### Per configuration (mean and IQM over seeds, 95% CI)\n\n" + table(
            ["configuration", "measure", "seeds", "mean [95% CI]", "IQM [95% CI]", "premise spearman",
             "violation rate", "return gap", "reference"], rows))
    for method, cells in sorted(report["d4rl"].items()):
        envs = sorted({env for row in cells.values() for env in row})
        order = [k for k in D4RL_ORDER if k in cells] + sorted(k for k in cells if k not in D4RL_ORDER)
        body = [[row, *(cell(cells[row].get(env)) for env in envs)] for row in order]
        parts.append(f"### {method} on D4RL (normalised score, mean [95% CI] over seeds; paper Table 1)\n\n"
                     + table(["dataset", *envs], body))
    if report["ood"]:
        body = [[r["task"], Path(r["dataset"]).name, str(r["rollout_length"] or "-"), f"{r['penalty_coef']:g}",
                 _num(r["batch_mean"]), _num(r["batch_max"]), cell(r["mopo"]), cell(r["mbpo"])]
                for r in report["ood"]]
        parts.append("### Out-of-distribution tasks (average return, mean [95% CI]; paper Table 2)\n\n" + table(
            ["environment", "dataset", "h", "lambda", "batch mean", "batch max", "MOPO", "MBPO (lambda 0)"], body))
    if report["aggregates"]:
        body = [[a["method"], str(len(a["tasks"])), str(a["seeds"]), interval(a["iqm"]), interval(a["mean"])]
                for a in report["aggregates"]]
        parts.append("### Across tasks (normalised score on the seeds every task has)\n\n"
                     + table(["method", "tasks", "seeds", "IQM [95% CI]", "mean [95% CI]"], body))
    if report["probability_of_improvement"]:
        body = [[p["x"], p["y"], str(len(p["tasks"])), interval(p, 2)] for p in report["probability_of_improvement"]]
        parts.append("### Probability of improvement P(X > Y) (Agarwal et al. 2021)\n\n"
                     + table(["X", "Y", "tasks", "P(X > Y) [95% CI]"], body))
    if report.get("figures"):
        parts.append("### Figures\n\n" + "\n".join(f"![{Path(f).stem}]({Path(f).name})" for f in report["figures"]))
    return "\n\n".join(parts) if rows else "no runs with evaluations"
