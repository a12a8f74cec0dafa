"""FQE (mopo_lightning/selection/fqe.py) against closed-form values on tiny one-hot MDPs.

Mutations of fqe.py each test was checked to catch (the test fails with the mutation in place):
- target on the current observation, Q_target(s, pi(s)) for Q_target(s', pi(s')): test_ring_value (estimate 0);
- d3rlpy issue #93, the policy on the current observation, Q_target(s', pi(s)): test_ring_value (estimate 34.06);
- (1 - terminated) dropped from the target: test_termination_gives_the_finite_sum (estimate 10, not 2.71);
- action draws reshaped as [B, samples] instead of [samples, B]: test_stochastic_policy_expected_value (std 0).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mopo_lightning.envs.tasks import get_task
from mopo_lightning.selection.fqe import (
    FQEConfig,
    episode_starts,
    evaluate_policy,
    normalized_score,
    return_scale,
    start_states,
)
from mopo_lightning.transitions import transitions

GAMMA = 0.9
S = 6  # ring states
FAST = FQEConfig(learning_rate=3e-3, gamma=GAMMA, hidden_dim=64, num_updates=1500, target_update_interval=15)
"""A budget for the tiny MDPs: 100 target copies (0.9^100 < 1e-4); about 2 s per fit on one thread."""


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def ring(reps: int = 20):
    """Every (s, a) of a 6-state ring, ``reps`` times: s' = (s + a) mod 6 for a in {-1, +1}, reward r(s, a) = s."""
    s = torch.arange(S).repeat_interleave(2).repeat(reps)
    a = torch.tensor([-1.0, 1.0]).repeat(S * reps)
    eye = torch.eye(S)
    return transitions(
        eye[s], a[:, None], eye[(s + a.long()) % S], s.float(), torch.zeros(len(s), dtype=torch.bool)
    )


def ring_policy(obs: torch.Tensor) -> torch.Tensor:
    """+1 everywhere but state 4, where -1: from 0 the path is 0 1 2 3 4 3 4 3 ..."""
    return torch.where(obs.argmax(-1) == 4, -1.0, 1.0)[:, None]


def closed_form(step, reward) -> np.ndarray:
    """V = (I - gamma P_pi)^-1 r_pi on the ring, under ``ring_policy``."""
    p, r = np.zeros((S, S)), np.zeros(S)
    for s in range(S):
        a = -1 if s == 4 else 1
        p[s, step(s, a) % S], r[s] = 1.0, reward(s, a)
    return np.linalg.solve(np.eye(S) - GAMMA * p, r)


START = torch.eye(S)[:1]  # s0 = state 0
# rewards along 0 1 2 3 | 4 3 4 3 ...: 0 + .9 + 2(.81) + 3(.729) + .9^4 (4 + 3(.9)) / (1 - .81) = 4.707 + 23.136
TRUE = 27.8432
# the data's columns swapped: from x with a the row goes to x - a with reward x - a (a reversed ring): 45.26
SWAPPED = closed_form(lambda x, a: x - a, lambda x, a: (x - a) % S)[0]


def test_closed_forms():
    assert closed_form(lambda s, a: s + a, lambda s, a: s)[0] == pytest.approx(TRUE, abs=1e-3)
    assert SWAPPED == pytest.approx(45.263, abs=1e-3)  # noqa: SIM300 -- pytest's order: the value, then approx


def test_ring_value():
    result = evaluate_policy(ring(), ring_policy, FAST, starts=START)
    assert result.value == pytest.approx(TRUE, abs=1.0)
    assert (result.start_states, result.updates, result.normalized_score) == (1, 1500, None)


def test_swapped_observation_columns_give_a_wrong_value():
    data = ring()
    swapped = data.clone()
    swapped["observation"], swapped["next", "observation"] = data["next", "observation"], data["observation"]
    wrong = evaluate_policy(swapped, ring_policy, FAST, starts=START).value
    assert abs(wrong - TRUE) > 8.0  # it estimates the reversed ring (45.26), not the data's MDP (27.84)


def chain(terminated: bool):
    """0 -> 1 -> 2 -> 3, reward 1 per step, then 3 -> 3 with reward 1; the step into 3 terminates or not."""
    s = torch.tensor([0, 1, 2, 3]).repeat(25)
    eye = torch.eye(4)
    end = (s == 2) & terminated
    return transitions(eye[s], torch.ones(len(s), 1), eye[(s + 1).clamp(max=3)], torch.ones(len(s)), end)


def always(obs: torch.Tensor) -> torch.Tensor:
    return torch.ones(obs.shape[0], 1)


def test_termination_gives_the_finite_sum():
    ends = evaluate_policy(chain(True), always, FAST, starts=torch.eye(4)[:1]).value
    goes_on = evaluate_policy(chain(False), always, FAST, starts=torch.eye(4)[:1]).value
    assert ends == pytest.approx(1 + GAMMA + GAMMA**2, abs=0.3)  # 2.71: three rewards, then the end
    assert goes_on == pytest.approx(1 / (1 - GAMMA), abs=0.5)  # 10: rewards forever


def test_stochastic_policy_expected_value():
    # one-step episodes (every row terminates), so Q(s, a) = r(s, a): r(0, a) = a, r(1, a) = -2a.
    # pi: P(+1 | s0) = 0.8 -> V(s0) = 0.8 - 0.2 = 0.6; P(+1 | s1) = 0.2 -> V(s1) = -0.4 + 1.6 = 1.2
    s = torch.tensor([0, 0, 1, 1]).repeat(25)
    a = torch.tensor([-1.0, 1.0]).repeat(50)
    r = torch.where(s == 0, a, -2 * a)
    data = transitions(torch.eye(2)[s], a[:, None], torch.eye(2)[s], r, torch.ones(len(s), dtype=torch.bool))
    noise = torch.Generator().manual_seed(0)

    def policy(obs: torch.Tensor) -> torch.Tensor:
        p_up = torch.where(obs.argmax(-1) == 0, 0.8, 0.2)
        return torch.where(torch.rand(obs.shape[0], generator=noise) < p_up, 1.0, -1.0)[:, None]

    config = FQEConfig(
        learning_rate=3e-3,
        gamma=GAMMA,
        hidden_dim=32,
        num_updates=400,
        n_critics=2,
        start_action_samples=4000,
    )
    result = evaluate_policy(data, policy, config, starts=torch.eye(2))
    assert result.value == pytest.approx(0.9, abs=0.05)  # (0.6 + 1.2) / 2
    assert result.value_std == pytest.approx(0.3, abs=0.05)  # |1.2 - 0.6| / 2


def test_episode_starts_from_done_and_broken_continuity():
    o = torch.arange(10.0)[:, None]
    # rows 0->1 1->2 2->3(done) 3->4 4->5 5->6 [6->7 dropped] 7->8 8->9: starts at rows 0, 3 (after a done row)
    # and 6 (its observation 7 is not the previous row's next observation 6)
    obs, nxt = o[[0, 1, 2, 3, 4, 5, 7, 8]], o[[1, 2, 3, 4, 5, 6, 8, 9]]
    done = torch.tensor([0, 0, 1, 0, 0, 0, 0, 0]).bool()
    data = transitions(obs, torch.zeros(8, 1), nxt, torch.zeros(8), done)
    assert episode_starts(data).tolist() == [True, False, False, True, False, False, True, False]
    assert start_states(data).squeeze(-1).tolist() == [0.0, 3.0, 7.0]
    with pytest.raises(ValueError, match="start states explicitly"):
        start_states(ring())  # unordered rows: nearly every row looks like a start


def test_config_refuses_nonsense():
    with pytest.raises(ValueError, match="target_update_interval=0"):
        FQEConfig(target_update_interval=0)
    with pytest.raises(ValueError, match="gamma"):
        FQEConfig(gamma=1.5)


def test_normalized_score_conversion():
    # constant reward c over H steps: discounted value c (1 - g^H) / (1 - g), return c H; the scale maps one to the
    # other
    scale = return_scale(0.99, 1000)
    value = 3.0 * (1 - 0.99**1000) / (1 - 0.99)
    assert value * scale == pytest.approx(3000.0)
    hopper = get_task("hopper")
    assert normalized_score(value, hopper, scale) == pytest.approx(hopper.normalized_score(3000.0))
    assert return_scale(1.0, 1000) == 1.0
