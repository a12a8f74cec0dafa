"""MBPO-style branched rollouts through the penalised model (MOPO reference, section 1 step 4).

Every start row is stepped until it terminates or ``horizon`` steps pass; a row's terminal transition is
kept and the row stops there. Rows that are done stay in the env's batch but are masked out with
TorchRL's ``_step`` key, so only live rows reach the ensemble.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import Tensor

from mopo_lightning.envs.model_env import PenalizedModelEnv


@torch.no_grad()
def branched_rollout(
    env: PenalizedModelEnv,
    policy: Callable[[TensorDictBase], TensorDictBase],
    start_obs: Tensor,
    horizon: int,
) -> tuple[TensorDict, dict[str, Tensor]]:
    """Roll ``policy`` from ``start_obs`` [N, O] for up to ``horizon`` steps.

    Returns the transitions of rows alive at each step (batch [M], the replay-buffer keys of
    ``docs/interfaces.md``) and the per-transition diagnostics ``penalty``, ``raw_reward`` and
    ``penalized_reward`` ([M, 1] each), for logging.
    """
    n, device = start_obs.shape[0], start_obs.device
    td = env.reset(TensorDict({"observation": start_obs}, batch_size=[n], device=device))
    alive = torch.ones(n, dtype=torch.bool, device=device)
    kept, diagnostics = [], {"penalty": [], "raw_reward": [], "penalized_reward": []}
    for _ in range(horizon):
        td = policy(td)
        td.set("_step", alive.unsqueeze(-1))
        td = env.step(td)
        step = td[alive]
        nxt = step["next"]
        terminated = nxt["terminated"]
        kept.append(TensorDict({
            "observation": step["observation"],
            "action": step["action"],
            "next": {"observation": nxt["observation"], "reward": nxt["reward"], "terminated": terminated,
                     "truncated": torch.zeros_like(terminated), "done": terminated},
        }, batch_size=step.batch_size))
        diagnostics["penalty"].append(nxt["penalty"])
        diagnostics["raw_reward"].append(nxt["raw_reward"])
        diagnostics["penalized_reward"].append(nxt["reward"])
        alive = alive & ~td["next", "terminated"].reshape(n)
        if not alive.any():
            break
        td = TensorDict({"observation": td["next", "observation"]}, batch_size=[n], device=device)
    return torch.cat(kept), {k: torch.cat(v) for k, v in diagnostics.items()}
