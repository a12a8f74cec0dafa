"""SACModule: learning on a bandit with a known optimum, Bellman targets, targets, alpha, counters."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from mopo_lightning.policy.networks import EnsembleQ, TanhGaussianActor
from mopo_lightning.policy.sac import SACModule

OBS, A = 3, 2
M = torch.tensor([[1.0, -0.5], [0.5, 1.0], [-0.7, 0.3]])


def best_action(obs: torch.Tensor) -> torch.Tensor:
    return 0.6 * torch.tanh(obs @ M)


def batch(n: int = 64, *, reward=None, terminated=None, action=None) -> TensorDict:
    obs = torch.randn(n, OBS)
    action = torch.rand(n, A) * 2 - 1 if action is None else action
    if reward is None:
        reward = -(action - best_action(obs)).pow(2).sum(-1, keepdim=True)
    if terminated is None:
        terminated = torch.ones(n, 1, dtype=torch.bool)
    return TensorDict(
        {
            "observation": obs,
            "action": action,
            ("next", "observation"): torch.randn(n, OBS),
            ("next", "reward"): reward,
            ("next", "terminated"): terminated,
            ("next", "done"): terminated.clone(),
        },
        batch_size=[n],
    )


def small(**kw) -> SACModule:
    return SACModule(OBS, A, **{"hidden_dim": 32, **kw})


def test_actor_finds_the_optimum_of_a_one_step_problem():
    # r = -||a - a*(s)||^2 and every step terminates, so Q = r and the best action is a*(s)
    torch.manual_seed(0)
    sac = SACModule(OBS, A, hidden_dim=64, actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, target_entropy=-4.0)
    probe = torch.randn(1000, OBS)
    err0 = (sac.act(probe, deterministic=True) - best_action(probe)).abs().amax(-1)
    for _ in range(2000):
        sac.update(batch(256))
    err = (sac.act(probe, deterministic=True) - best_action(probe)).abs().amax(-1)
    assert err0.mean() > 0.2
    assert err.mean() < 0.05 and err.quantile(0.95) < 0.12


def test_target_bootstraps_on_terminated_only_with_min_of_target_critics():
    sac = small(gamma=0.9, init_log_alpha=-40.0)  # alpha ~ 4e-18: the entropy term vanishes
    with torch.no_grad():  # target critics output constants 3 and 5 (the min, 3, must be used)
        sac.critic_target.weights[-1].zero_()
        sac.critic_target.biases[-1].copy_(torch.tensor([3.0, 5.0]).view(2, 1, 1))
    reward = torch.tensor([[1.0], [2.0], [-1.0]])
    terminated = torch.tensor([[True], [False], [False]])
    data = batch(3, reward=reward, terminated=terminated)
    data["next", "done"] = torch.tensor([[True], [True], [False]])  # row 1 is truncated: still bootstraps
    expected = torch.tensor([[1.0], [2.0 + 0.9 * 3.0], [-1.0 + 0.9 * 3.0]])
    assert torch.allclose(sac.compute_target(data), expected)
    # the update's critic loss is 0.5 * sum over both critics of the MSE to that target
    with torch.no_grad():
        q = sac.critic(data["observation"], data["action"])  # [2, 3, 1]
    out = sac.update(data)
    assert torch.allclose(out["loss_qvalue"], 0.5 * (q - expected).pow(2).mean(dim=(1, 2)).sum())


def test_targets_move_by_tau_towards_the_critics_after_each_update():
    sac = small(tau=0.1)
    with torch.no_grad():
        for p in sac.critic_target.parameters():
            p.add_(1.0)
    before = [p.clone() for p in sac.critic_target.parameters()]
    sac.update(batch())
    for old, new, online in zip(before, sac.critic_target.parameters(), sac.critic.parameters(), strict=True):
        assert torch.allclose(new, old + 0.1 * (online - old), atol=1e-6)
    assert not any(p.requires_grad for p in sac.critic_target.parameters())


@pytest.mark.parametrize("target_entropy, sign", [(-10.0, -1.0), (10.0, 1.0)])
def test_alpha_falls_above_target_entropy_and_rises_below(target_entropy, sign):
    # entropy of the initial 2-d policy is about 1.5: above -10, below +10; Adam's first step is lr
    sac = small(target_entropy=target_entropy, alpha_lr=0.01)
    out = sac.update(batch())
    assert -10.0 < out["entropy"] < 10.0 and out["alpha"] == 1.0
    assert math.isclose(sac.log_alpha.item(), sign * 0.01, rel_tol=1e-3)


def test_update_counter_and_determinism():
    def run(seed):
        torch.manual_seed(seed)
        sac = small()
        for _ in range(5):
            sac.update(batch())
        return sac

    a, b, c = run(1), run(1), run(2)
    assert a.sac_updates.item() == 5 and a.sac_updates.dtype == torch.long
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.actor.net[0].weight, c.actor.net[0].weight)


def test_tanh_gaussian_log_prob_and_log_std_clip():
    torch.manual_seed(0)
    actor = TanhGaussianActor(OBS, A, hidden_dim=16)
    obs = torch.randn(500, OBS)
    action, log_prob = actor.sample(obs)
    mean, log_std = actor(obs)
    # torch's reference density, evaluated away from the +-1 edges where atanh is unstable
    ref = TransformedDistribution(Normal(mean, log_std.exp()), [TanhTransform()]).log_prob(action).sum(-1)
    ok = action.abs().amax(-1) < 0.999
    assert torch.allclose(log_prob.squeeze(-1)[ok], ref[ok], atol=1e-3)
    assert torch.equal(actor.sample(obs, deterministic=True)[0], torch.tanh(mean))
    with torch.no_grad():
        actor.net[-1].bias[A:] = 50.0
        actor.net[-1].weight.zero_()
    assert torch.equal(actor(obs)[1], torch.full((500, A), 2.0))


def test_act_and_torchrl_policy_module():
    sac = small()
    obs = torch.randn(8, OBS)
    assert torch.equal(sac.act(obs, deterministic=True), torch.tanh(sac.actor(obs)[0]))
    assert torch.equal(sac(obs), sac.act(obs, deterministic=True))
    policy = sac.policy_module()
    td = policy(TensorDict({"observation": obs}, batch_size=[8]))
    assert td["action"].shape == (8, A) and td["action"].abs().max() <= 1 and not td["action"].requires_grad
    with torch.no_grad():  # the policy follows the live weights
        sac.actor.net[-1].bias[:A] = 100.0
        sac.actor.net[-1].weight.zero_()
    assert torch.allclose(policy(td)["action"], torch.ones(8, A))


@pytest.mark.parametrize("num_layers", [0, 2])
def test_critic_ensemble_is_independent_relu_mlps_and_detached_weights_pass_gradients_to_the_action_only(
    num_layers,
):
    torch.manual_seed(0)
    critic = EnsembleQ(OBS, A, hidden_dim=16, num_layers=num_layers, num_q=3)
    obs, action = torch.randn(10, OBS), torch.randn(10, A, requires_grad=True)

    def member(q: int) -> torch.Tensor:  # one plain MLP, written out with float64 matmuls
        x = torch.cat([obs, action], -1).double()
        for i, (w, b) in enumerate(zip(critic.weights, critic.biases, strict=True)):
            x = x @ w[q].double() + b[q].double()
            x = x.relu() if i < num_layers else x
        return x

    ref = torch.stack([member(q) for q in range(3)])
    out = critic(obs, action)
    assert out.shape == (3, 10, 1)
    assert torch.allclose(out.double(), ref, atol=1e-5)
    (ref_grad,) = torch.autograd.grad(ref.sum(), action)
    params = list(critic.parameters())
    grad, *param_grads = torch.autograd.grad(critic(obs, action, detach_params=True).sum(), [action, *params],
                                             allow_unused=True)
    assert torch.allclose(grad, ref_grad, atol=1e-5)
    assert all(g is None for g in param_grads)  # no weight-gradient work in the actor loss


@pytest.mark.parametrize("deterministic", [False, True])
@pytest.mark.parametrize("chunk_size", [None, 7, 1000])
def test_act_is_sample_without_log_prob(deterministic, chunk_size):
    """The rollout's and evaluation's call gives ``sample``'s actions from the same noise draws: exactly in one
    chunk; in chunks to float rounding (a matmul's blocking depends on its row count)."""
    actor = TanhGaussianActor(OBS, A, hidden_dim=16)
    obs = torch.randn(50, OBS)
    torch.manual_seed(3)
    ref = actor.sample(obs, deterministic=deterministic)[0]
    ref_rng = torch.random.get_rng_state()
    torch.manual_seed(3)
    out = actor.act(obs, deterministic=deterministic, chunk_size=chunk_size)
    assert not out.requires_grad
    if chunk_size == 7:
        torch.testing.assert_close(out, ref.detach(), rtol=0, atol=1e-6)
    else:
        assert torch.equal(out, ref)
    assert torch.equal(torch.random.get_rng_state(), ref_rng)  # the same draws: later randomness is unchanged
