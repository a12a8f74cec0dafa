"""``mopo-lightning select RUN_OR_SWEEP_DIR...``: pick a run per dataset from offline value estimates alone.

The logic is ``selection/candidates.py``; this is the command.
"""

from __future__ import annotations

from json import dumps

from mopo_lightning.data.errors import DatasetError
from mopo_lightning.selection.candidates import SelectConfig, markdown, select_runs, write


def main(runs: list[str], json: bool = False, out: str | None = None, last: int = 1, fqe_updates: int = 0,
         quiet: bool = False) -> None:
    """Estimate each finished run's final policy without the real env (the model-based value in the run's own
    dynamics model: optimistic, as the policy trained against it), choose the best estimate per dataset, then,
    where results.json holds online scores, report how good the choices were (Spearman, regret@1, MAE).

    Args:
        runs: run directories (or their results.json files), or directories holding runs (a sweep directory).
        json: print the selection as JSON instead of Markdown.
        out: also write select.md and select.json into this directory.
        last: a run's online score (read only after choosing) is the mean of its last K evaluations.
        fqe_updates: also fit FQE with this many updates per candidate, a second estimate column (0: none).
        quiet: no progress bar.
    """
    if last < 1 or fqe_updates < 0:
        raise ValueError("--last must be >= 1 and --fqe_updates >= 0")
    try:
        selection = select_runs(runs, SelectConfig(fqe_updates=fqe_updates, last=last), quiet=quiet)
    except ValueError as err:
        raise DatasetError(str(err)) from None
    if out is not None:
        write(selection, out)
    print(dumps(selection, indent=1) if json else markdown(selection))
