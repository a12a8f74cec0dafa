"""Periodic evaluation of the policy in the real MuJoCo env (MOPO reference, section 1 step 6).

Episodes run side by side, one plain gymnasium env each, stepped only while their episode runs, with a single
batched policy call per step (HalfCheetah's 10 x 1000 steps: 0.75 -> 0.68 s against a ``SyncVectorEnv``, which
also steps finished episodes until the last one ends, the same returns to the bit). Episode ``i`` is
always reset with seed ``seed + i``, so an evaluation is a pure function of the policy: two evaluations
of the same weights give the same numbers, and the episodes can be split across ranks and gathered
without changing the result.

With ``record=True`` the episodes' real transitions come back too (``EvalResult.transitions``), for the
evaluation's ``listeners`` (``callbacks.premise``); each finished entry then goes to its ``results``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from tensordict import TensorDict
from torch import Tensor

from mopo_lightning.diagnostics.premise import EPISODE, STEP
from mopo_lightning.envs.tasks import Task, get_task
from mopo_lightning.envs.wrappers import make_env
from mopo_lightning.machine import is_rank_zero
from mopo_lightning.transitions import transitions

log = logging.getLogger(__name__)

ActFn = Callable[[Tensor], Tensor]
"""Batched deterministic policy: observation [B, O] -> action [B, A]."""


@dataclass
class EvalResult:
    """Per-episode returns and lengths, in episode-id order; the transitions when recorded.

    ``transitions`` (``record=True``): a transition TensorDict [N] (``transitions.TRANSITION_KEYS``) plus
    ``episode`` and ``step`` [N] (long), rows ordered by episode id, then step. ``("next", "observation")``
    is the true next state even at an episode's last step (the observation that step returned).
    """

    returns: np.ndarray
    lengths: np.ndarray
    transitions: TensorDict | None = None


class EvaluationListener(Protocol):
    """Called by ``MuJoCoEvaluation`` on every rank after each evaluation (``callbacks.premise``)."""

    def on_evaluation(self, trainer: L.Trainer, pl_module: L.LightningModule, result: EvalResult,
                      entry: dict[str, Any]) -> None:
        """``result``: this rank's episodes (transitions recorded); ``entry``: the history row to add to."""
        ...


class EvaluationRecord(Protocol):
    """Receives each finished evaluation entry (with what the listeners added), on every rank (``RunResults``)."""

    def record_evaluation(self, trainer: L.Trainer, entry: dict[str, Any]) -> None: ...


@contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``module`` in eval mode for the block, then back in the mode it had (also on an exception).

    Evaluations, videos and the premise run inside training: the module must leave as it came.
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


def evaluate_policy(
    task: Task | str,
    act: ActFn,
    episode_ids: Sequence[int],
    seed: int = 0,
    max_episode_steps: int = 1000,
    device: torch.device | str = "cpu",
    policy_batch: int | None = None,
    record: bool = False,
) -> EvalResult:
    """Run one episode per id, side by side; episode ``i`` resets with seed ``seed + i``.

    The policy always sees a batch of ``policy_batch`` rows (default: ``max(ids) + 1``) with episode
    ``i`` in row ``i``: matmul results depend on the batch shape, and a chaotic env amplifies that
    last-bit difference, so a subset of episodes must be computed exactly as in the full batch.

    ``record``: also return the transitions (``EvalResult.transitions``), each episode's steps up to and
    including the one that ends it (its true final observation).
    """
    task = get_task(task)
    n = len(episode_ids)
    rows = torch.as_tensor(list(episode_ids), dtype=torch.long)
    if n == 0:
        return EvalResult(np.zeros(0), np.zeros(0, dtype=np.int64))
    # One plain env per episode, stepped only while its episode runs: a vector env would step (and autoreset)
    # finished episodes until the last one ends, physics thrown away on tasks that terminate early.
    envs = [make_env(task, max_episode_steps=max_episode_steps) for _ in range(n)]
    try:
        obs = np.stack([env.reset(seed=seed + int(i))[0] for env, i in zip(envs, episode_ids, strict=True)])
        returns = np.zeros(n)
        lengths = np.zeros(n, dtype=np.int64)
        running = np.ones(n, dtype=bool)
        steps: list[tuple[np.ndarray, ...]] = []  # per step, arrays over the n episodes
        batch = max(policy_batch or 0, int(rows.max()) + 1)
        obs_full = torch.zeros(batch, task.obs_dim, device=device)
        rows = rows.to(device)
        while running.any():
            with torch.no_grad():
                obs_full[rows] = torch.as_tensor(obs, dtype=torch.float32, device=device)
                action = act(obs_full)[rows].cpu().numpy()
            next_obs, reward = obs.copy(), np.zeros(n)
            terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
            for i in np.flatnonzero(running):  # finished rows keep their last observation
                next_obs[i], reward[i], terminated[i], truncated[i], _ = envs[i].step(action[i])
            if record:
                steps.append((obs, action, reward, next_obs, terminated, truncated, running.copy()))
            obs = next_obs
            returns += np.where(running, reward, 0.0)
            lengths += running
            running &= ~(terminated | truncated)
    finally:
        for env in envs:
            env.close()
    recorded = _stack(steps, list(episode_ids)) if record else None
    return EvalResult(returns, lengths, recorded)


def _stack(steps: list[tuple[np.ndarray, ...]], episode_ids: list[int]) -> TensorDict:
    """Per-step arrays over episodes -> transitions [N] of the running rows, episode-major."""
    def as_t(i: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.as_tensor(np.stack([step[i] for step in steps], axis=1), dtype=dtype)  # [n, T, ...]
    n, length = len(episode_ids), len(steps)
    keep = as_t(6, torch.bool)  # [n, T]
    out = transitions(as_t(0)[keep], as_t(1)[keep], as_t(3)[keep], as_t(2)[keep],
                      terminated=as_t(4, torch.bool)[keep], truncated=as_t(5, torch.bool)[keep])
    ids = torch.as_tensor(episode_ids, dtype=torch.long)
    out[EPISODE] = ids[:, None].expand(n, length)[keep]
    out[STEP] = torch.arange(length)[None, :].expand(n, length)[keep]
    return out


class MuJoCoEvaluation(L.Callback):
    """Evaluate the deterministic policy (tanh of the mean) every ``every_n_epochs`` epochs.

    Logs ``eval/return_mean``, ``eval/return_std``, ``eval/normalized_score`` and
    ``eval/episode_length`` at the current SAC-update step; the score also goes to the progress bar.
    Variant tasks without D4RL reference scores log no score (the return goes to the progress bar).
    """

    def __init__(
        self,
        num_episodes: int = 10,
        max_episode_steps: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 100_000,
        task: str | Task | None = None,
        video_every_n_evals: int = 0,
        video_size: int = 128,
        video_frame_skip: int = 2,
        *,
        listeners: Sequence[EvaluationListener] = (),
        results: EvaluationRecord | None = None,
    ) -> None:
        """
        Args:
            num_episodes: episodes per evaluation (MOPO: 10).
            max_episode_steps: time limit of an evaluation episode (MOPO: 1000).
            every_n_epochs: evaluate after every n-th training epoch.
            seed: episode i resets with ``seed + i``; kept apart from training seeds.
            task: task name, or the data's own ``Task`` (the recipe's default: a Minari dataset's recorded env);
                a variant such as ``halfcheetah-jump`` scores its own reward.
            video_every_n_evals: every n evaluations, episode 0 as an animated GIF beside the TensorBoard
                logs and a strip of its frames in TensorBoard (``callbacks.video``; 0: off).
                Rendered off-screen by MuJoCo (``MUJOCO_GL=egl`` or ``osmesa``); skipped with a log line
                when no renderer is available.
            video_size: video width and height in pixels.
            video_frame_skip: keep every n-th frame (smaller GIFs).
            listeners: in order, measure on each evaluation's recorded transitions and add to its entry
                (``callbacks.premise.PremiseMonitor``); none: nothing is recorded. Handed in by the recipe.
            results: receives each finished entry, after the listeners (``callbacks.results.RunResults``).
        """
        super().__init__()
        self.num_episodes = num_episodes
        self.max_episode_steps = max_episode_steps
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.task = task
        self.video_every_n_evals = video_every_n_evals
        self.video_size = video_size
        self.video_frame_skip = video_frame_skip
        self.history: list[dict[str, Any]] = []
        self.listeners: tuple[EvaluationListener, ...] = tuple(listeners)
        self.results = results
        self.last_result: EvalResult | None = None  # this rank's share of the latest evaluation

    def _task(self) -> Task:
        if self.task is None:
            raise ValueError("MuJoCoEvaluation needs its task: a name, or the data's own Task (the recipe hands it)")
        return self.task if isinstance(self.task, Task) else get_task(self.task)

    def run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """Evaluate now; episodes are split across ranks and gathered so every rank logs the same."""
        task = self._task()
        world, rank = trainer.world_size, trainer.global_rank
        ids = list(range(self.num_episodes))[rank::world]
        start = time.perf_counter()
        with eval_mode(pl_module):
            result = evaluate_policy(
                task,
                lambda obs: pl_module.act(obs, deterministic=True),
                ids,
                seed=self.seed,
                max_episode_steps=self.max_episode_steps,
                device=pl_module.device,
                policy_batch=self.num_episodes,
                record=bool(self.listeners),
            )
        self.last_result = result
        returns, lengths = self._gather(trainer, pl_module, ids, result)
        metrics = {
            "eval/return_mean": float(returns.mean()),
            "eval/return_std": float(returns.std()),
            "eval/normalized_score": float(task.normalized_score(returns.mean())),
            "eval/episode_length": float(lengths.mean()),
            "eval/seconds": time.perf_counter() - start,
        }
        if not task.has_reference_scores:  # variants (halfcheetah-jump, ...): returns only
            del metrics["eval/normalized_score"]
        return metrics

    def _gather(
        self, trainer: L.Trainer, pl_module: L.LightningModule, ids: list[int], result: EvalResult
    ) -> tuple[np.ndarray, np.ndarray]:
        if trainer.world_size == 1:
            return result.returns, result.lengths
        # Pad each rank's share to a common length, all-gather, then put episodes back in id order.
        share = -(-self.num_episodes // trainer.world_size)
        local = torch.full((share, 3), float("nan"), dtype=torch.float64, device=pl_module.device)
        local[: len(ids), 0] = torch.as_tensor(ids, dtype=torch.float64)
        local[: len(ids), 1] = torch.as_tensor(result.returns)
        local[: len(ids), 2] = torch.as_tensor(result.lengths, dtype=torch.float64)
        rows = trainer.strategy.all_gather(local).reshape(-1, 3).cpu()
        rows = rows[~torch.isnan(rows[:, 0])]
        rows = rows[rows[:, 0].argsort()]
        return rows[:, 1].numpy(), rows[:, 2].numpy()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        check = getattr(pl_module, "check_finite", None)
        if callable(check):  # callbacks run before the module's own epoch-end check: never evaluate a NaN policy
            check()
        metrics = self.run(trainer, pl_module)
        # Every rank holds the same gathered numbers: log them once.
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, rank_zero_only=True)
        name, key = ("score", "eval/normalized_score") if "eval/normalized_score" in metrics else (
            "return", "eval/return_mean")
        pl_module.log(name, metrics[key], prog_bar=True, logger=False, rank_zero_only=True)
        updates = int(getattr(pl_module, "sac_updates", trainer.global_step))
        # a variant has no normalised score: NaN in the history (results.json, TensorBoard's hp_metric)
        entry = {"sac_updates": updates, "eval/normalized_score": float("nan"), **metrics}
        for listener in self.listeners:  # before the entry is published: listeners may add to it
            listener.on_evaluation(trainer, pl_module, self.last_result, entry)
        self.history.append(entry)
        if self.results is not None:
            self.results.record_evaluation(trainer, entry)
        if self.video_every_n_evals and len(self.history) % self.video_every_n_evals == 0:
            self.log_video(trainer, pl_module, updates)

    def log_video(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> None:
        """Render episode 0 and log it (rank 0, ``video.log_video``); turn videos off if rendering fails."""
        writer = getattr(trainer.logger, "experiment", None)
        if not is_rank_zero(trainer) or not hasattr(writer, "add_images"):
            return
        from mopo_lightning.callbacks.video import log_video, render_episode

        with eval_mode(pl_module):
            try:
                frames = render_episode(self._task(), lambda obs: pl_module.act(obs, deterministic=True),
                                        self.seed, self.max_episode_steps, self.video_size, self.video_frame_skip,
                                        pl_module.device)
            except Exception as error:  # no OpenGL backend, no Pillow, ...
                log.warning("evaluation videos are off: MuJoCo could not render off-screen (%s: %s); "
                            "set MUJOCO_GL=egl or osmesa", type(error).__name__, error)
                self.video_every_n_evals = 0
                return
        log_video(writer, "eval/video", frames, step, fps=50.0 / self.video_frame_skip)
