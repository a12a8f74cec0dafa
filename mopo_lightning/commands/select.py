"""``mopo-lightning select RUN_OR_SWEEP_DIR...``: choose a policy per dataset from offline estimates alone.

The logic is ``selection/selector.py``; this is the command.
"""

from __future__ import annotations

from json import dumps

from mopo_lightning.data.errors import DatasetError
from mopo_lightning.selection.candidates import Kind
from mopo_lightning.selection.estimators import Estimator, EstimatorConfig
from mopo_lightning.selection.evaluation_model import EVALUATION_SEED
from mopo_lightning.selection.render import markdown, write
from mopo_lightning.selection.selector import SelectConfig, select_runs

ESTIMATORS = EstimatorConfig()
"""The estimators' defaults (frozen: one shared instance is safe)."""


def main(runs: list[str], json: bool = False, out: str | None = None, choose_by: Estimator = "eval_mean",
         candidates: Kind = "final", evaluation_seed: int = EVALUATION_SEED, dynamics_cache: str | None = None,
         estimators: EstimatorConfig = ESTIMATORS, last: int = 1, store: str | None = None,
         quiet: bool = False) -> None:
    """Estimate every candidate policy without the real env (model-based values in the run's own model and in an
    evaluation model of another seed, their lower bounds across members, optionally FQE), choose the best
    estimate per dataset, then, where results.json holds online scores, measure every estimator's choices
    (Spearman, regret@1 and @3, MAE, the chosen policy's online score beside the best).

    Args:
        runs: run directories (or their results.json files), or directories holding runs (a sweep directory).
        json: print the selection as JSON instead of Markdown.
        out: also write select.md, select.json and one estimate-against-online figure per estimator here.
        choose_by: the estimate the choice maximises: own_mean, own_min, eval_mean, eval_min or fqe.
        candidates: final (each run's final policy) or epochs (every SAC checkpoint a run kept; fit's
            --keep_checkpoints N keeps N).
        evaluation_seed: seed of the evaluation model (one per dataset, from the dynamics cache or trained into it).
        dynamics_cache: the cache for the evaluation model (default: the one the runs' stage 1 used).
        estimators: the estimators' knobs (--estimators.model_value.max_starts, --estimators.fqe.num_updates N to
            add FQE, --estimators.evaluation_model false to leave the evaluation model out).
        last: a final candidate's online score (read only after choosing) is the mean of its last K evaluations.
        store: a JSON-lines file of the estimates made, appended as each is made and reused while its inputs are
            unchanged: a stopped select resumes, a grown sweep estimates only its new candidates (default:
            OUT/estimates.jsonl with --out, else none).
        quiet: no progress bar.
    """
    try:
        config = SelectConfig(estimators=estimators, choose_by=choose_by, candidates=candidates,
                              evaluation_seed=evaluation_seed, dynamics_cache=dynamics_cache, last=last,
                              store=store if store is not None or out is None else f"{out}/estimates.jsonl")
        selection = select_runs(runs, config, quiet=quiet)
    except ValueError as err:
        raise DatasetError(str(err)) from None
    if out is not None:
        write(selection, out)
    print(dumps(selection, indent=1) if json else markdown(selection))
