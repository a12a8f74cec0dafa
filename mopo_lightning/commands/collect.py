"""``mopo-lightning collect``: behaviour data from the real MuJoCo env, as D4RL-schema HDF5 or a Minari dataset.

``--policy random|falling`` runs ``collection.collect.collect``; ``--policy sac`` trains SAC online
(``collection.online.collect_sac``) with the settings of the ``sac`` group (the ``sac:`` section of
``conf/collect/*.yaml``), which the other policies ignore. Both get exactly the arguments given here, so
the same arguments write the same file as a call of those functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from jsonargparse.typing import PositiveInt

from mopo_lightning.collection.collect import collect as collect_offline
from mopo_lightning.collection.online import SACCollectConfig, collect_sac
from mopo_lightning.envs.rewards import REWARDS
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.guards import ConfigError


def collect(
    *,
    task: str,
    steps: PositiveInt,
    path: str | None = None,
    policy: Literal["random", "falling", "sac"] = "random",
    seed: int = 0,
    max_episode_steps: PositiveInt | None = None,
    quiet: bool = False,
    format: Literal["d4rl", "minari"] = "d4rl",
    dataset_id: str | None = None,
    ref_min_score: float | None = None,
    ref_max_score: float | None = None,
    sac: SACCollectConfig,
) -> Path:
    """Run a behaviour policy in the real MuJoCo env and write a D4RL-schema HDF5 file or a Minari dataset.

    Args:
        task: task name (hopper, walker2d, halfcheetah, ant) or a D4RL name such as ``hopper-random-v2``.
        steps: number of transitions to record.
        path: output HDF5 file (``--format d4rl``); written to a temporary file and renamed into place.
        policy: ``random`` (uniform actions), ``falling`` (bang-bang, robots fall often) or ``sac`` (online
            SAC, checkpointed and resumable; its settings are the ``sac`` group).
        seed: seeds the env, the policy and SAC; the same arguments give the same file.
        max_episode_steps: time limit of an episode (default: the env's 1000).
        quiet: hide the progress bar and progress lines.
        format: ``d4rl`` (an HDF5 file at ``--path``) or ``minari`` (a Minari dataset named ``--dataset_id``
            in the local Minari store, ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``).
        dataset_id: Minari dataset id for ``--format minari``, e.g. ``local/hopper/random-v0``.
        ref_min_score: Minari reference return of a random policy (normalised score 0).
        ref_max_score: Minari reference return of an expert (score 100); given alone, Minari measures
            ``ref_min_score`` with 100 random-policy episodes; neither: the dataset has no scores.
        sac: online SAC settings, used by ``--policy sac`` only.

    Returns:
        The path of the written file.
    """
    try:
        get_task(task)
    except KeyError as err:
        raise ConfigError(f"--task: {err.args[0]}") from None
    steps = int(steps)  # jsonargparse's PositiveInt -> plain int, as the collectors were always given
    max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
    if format == "d4rl" and path is None:
        raise ConfigError("--path is required with --format d4rl (the output HDF5 file)")
    if format == "minari" and (path is not None or dataset_id is None or policy == "sac"):
        raise ConfigError("--format minari writes into the Minari store: give --dataset_id (not --path), "
                          "with --policy random or falling")
    if policy == "sac":
        if sac.behaviour_reward != "env" and sac.behaviour_reward not in REWARDS:
            raise ConfigError(f"--sac.behaviour_reward {sac.behaviour_reward!r}: use 'env' or one of "
                              f"{', '.join(sorted(REWARDS))}")
        written = collect_sac(task, steps, path, seed=seed, max_episode_steps=max_episode_steps, quiet=quiet, sac=sac)
    else:
        written = collect_offline(task, steps, path, policy=policy, seed=seed, max_episode_steps=max_episode_steps,
                                  quiet=quiet, format=format, dataset_id=dataset_id, ref_min_score=ref_min_score,
                                  ref_max_score=ref_max_score)
    print(f"wrote {written}")
    return written
