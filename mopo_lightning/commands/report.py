"""``mopo-lightning report RUN_OR_SWEEP_DIR...``: the paper's tables with honest statistics, and figures.

The report is built by ``report.py`` (runs, cells and statistics in ``analysis/``); this is the command.
"""

from __future__ import annotations

from json import dumps

from mopo_lightning.analysis import statistics as st
from mopo_lightning.analysis.tables import markdown
from mopo_lightning.report import Settings, make_report


def main(runs: list[str], json: bool = False, out: str | None = None, last: int = 1, reps: int = st.REPS,
         seed: int = st.SEED, include_unfinished: bool = False, selection: str | None = None) -> None:
    """The paper's Table 1 (methods side by side), per-configuration and across-task statistics, figures.

    Args:
        runs: run directories (or their results.json files), or directories holding runs (a sweep directory).
        json: print the report as JSON instead of Markdown.
        out: also write report.md, report.json and the figures (PNG) into this directory.
        last: a run's score is the mean of its last K evaluations (1: the final evaluation, the paper's choice).
        reps: bootstrap replications of every interval.
        seed: seed of the bootstrap's random state (a report is reproducible).
        include_unfinished: also use runs that did not finish (running, failed, stopped), marked as such.
        selection: a select.json (or the directory `select --out` wrote): its chosen estimate beside each
            configuration's online score.
    """
    if last < 1 or reps < 1:
        raise ValueError("--last and --reps must be >= 1")
    report = make_report(runs, Settings(last, reps, seed, include_unfinished, selection), out)
    print(dumps(report, indent=1) if json else markdown(report))
