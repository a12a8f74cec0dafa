"""SAC loss terms and the sync-free NaN guard: the update equals a plain SAC written out here, bit for bit."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import random_sac_batches
from tensordict import TensorDict

from mopo_lightning.guards import NonFiniteError
from mopo_lightning.policy.sac import SACModule

OBS, A, B = 3, 2, 48


def batches(n: int, seed: int = 0, device: str = "cpu") -> list[TensorDict]:
    return [td.to(device) for td in random_sac_batches(n, OBS, A, B, seed)]


def plain_sac(sac: SACModule, data: list[TensorDict]) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """SAC as softlearning writes it, on copies of ``sac``'s networks: critics step, then the actor (on
    the stepped critics), then alpha, then targets move by tau. Returns the final weights and the losses."""
    actor, critic, critic_target = (copy.deepcopy(m) for m in (sac.actor, sac.critic, sac.critic_target))
    log_alpha = sac.log_alpha.detach().clone().requires_grad_(True)
    hp = sac.hparams
    actor_opt = torch.optim.Adam(actor.parameters(), lr=hp.actor_lr, fused=True)
    critic_opt = torch.optim.Adam(critic.parameters(), lr=hp.critic_lr, fused=True)
    alpha_opt = torch.optim.Adam([log_alpha], lr=hp.alpha_lr, fused=True)
    losses = []
    for b in data:
        s, a, s2 = b["observation"], b["action"], b["next", "observation"]
        r, not_done = b["next", "reward"], 1.0 - b["next", "terminated"].float()
        alpha = log_alpha.detach().exp()
        with torch.no_grad():
            a2, logp2 = actor.sample(s2)
            y = r + hp.gamma * not_done * (critic_target(s2, a2).amin(dim=0) - alpha * logp2)
        q = critic(s, a)  # [2, B, 1]
        q_loss = 0.5 * (q - y).pow(2).mean(dim=(1, 2)).sum()
        critic_opt.zero_grad()
        q_loss.backward()
        critic_opt.step()

        new_a, logp = actor.sample(s)
        pi_loss = (alpha * logp - critic(s, new_a).amin(dim=0)).mean()
        actor_opt.zero_grad()
        pi_loss.backward()
        actor_opt.step()

        alpha_loss = -(log_alpha * (logp.detach() + hp.target_entropy)).mean()
        alpha_opt.zero_grad()
        alpha_loss.backward()
        alpha_opt.step()
        with torch.no_grad():
            for target, online in zip(critic_target.parameters(), critic.parameters(), strict=True):
                target.lerp_(online, hp.tau)
        losses.append(torch.stack([q_loss, pi_loss, alpha_loss]).detach())
    weights = {f"actor.{k}": v for k, v in actor.state_dict().items()}
    weights |= {f"critic.{k}": v for k, v in critic.state_dict().items()}
    weights |= {f"critic_target.{k}": v for k, v in critic_target.state_dict().items()}
    return weights | {"log_alpha": log_alpha.detach()}, losses


def test_update_equals_a_plain_sac_bit_for_bit():
    torch.manual_seed(0)
    sac = SACModule(OBS, A, hidden_dim=32, target_entropy=-2.0, tau=0.05)
    data = batches(6)
    torch.manual_seed(1)
    ref_weights, ref_losses = plain_sac(sac, data)
    torch.manual_seed(1)  # the same noise for the actor's samples
    outs = [sac.update(b) for b in data]
    state = sac.state_dict()
    for name, value in ref_weights.items():
        assert torch.equal(state[name], value), name
    for out, ref in zip(outs, ref_losses, strict=True):
        assert torch.equal(torch.stack([out["loss_qvalue"], out["loss_actor"], out["loss_alpha"]]), ref)


def test_loss_terms_are_tensordicts_whose_losses_reach_only_their_own_parameters():
    sac = SACModule(OBS, A, hidden_dim=16)
    b = batches(1)[0]
    q_terms, pi_terms = sac.loss_qvalue(b), sac.loss_actor(b)
    alpha_terms = sac.loss_alpha(pi_terms["log_prob"])
    assert set(q_terms.keys()) == {"loss_qvalue", "q_mean", "q_max"}
    assert set(pi_terms.keys()) == {"loss_actor", "log_prob", "entropy"}
    assert set(alpha_terms.keys()) == {"loss_alpha", "alpha"}
    assert pi_terms["log_prob"].shape == (B, 1) and not pi_terms["log_prob"].requires_grad
    assert torch.equal(pi_terms["entropy"], -pi_terms["log_prob"].mean())
    groups = {"critic": list(sac.critic.parameters()), "actor": list(sac.actor.parameters()),
              "alpha": [sac.log_alpha]}
    for term, loss, owner in ((q_terms, "loss_qvalue", "critic"), (pi_terms, "loss_actor", "actor"),
                              (alpha_terms, "loss_alpha", "alpha")):
        assert term[loss].dim() == 0 and term[loss].requires_grad
        sac.zero_grad(set_to_none=True)
        term[loss].backward()
        for group, params in groups.items():
            assert all((p.grad is not None) == (group == owner) for p in params), (loss, group)


def test_nan_stops_at_the_next_check_naming_the_first_bad_update_and_the_range():
    sac = SACModule(OBS, A, hidden_dim=16, check_finite_every=4)
    data = batches(8)
    data[5]["next", "reward"][0] = float("nan")  # update 6: its critic loss, then everything after
    for b in data[:7]:
        sac.update(b)  # updates 1-4 pass the check at 4; no check at 5-7
    first_bad = sac.nonfinite_at.tolist()  # per LOG_KEYS entry, its first non-finite update (0: none)
    assert first_bad[0] == 6 and min(step for step in first_bad if step) == 6
    message = r"^non-finite sac/loss_qvalue at SAC update 6 \(found by the check of SAC updates 5 to 8\)"
    with pytest.raises(NonFiniteError, match=message):
        sac.update(data[7])


def test_checkpoints_and_loading_respect_the_nan_record():
    sac = SACModule(OBS, A, hidden_dim=16, check_finite_every=1000)
    clean = copy.deepcopy(sac.state_dict())
    sac.on_save_checkpoint({})  # nothing recorded: fine
    with torch.no_grad():
        sac.log_alpha.fill_(float("nan"))
    sac.update(batches(1)[0])
    with pytest.raises(NonFiniteError, match="at SAC update 1"):
        sac.on_save_checkpoint({})
    sac.load_state_dict(clean)  # good weights back: the record of the old ones is dropped
    sac.check_finite()
    assert sac.nonfinite_at.eq(0).all()
    assert "nonfinite_at" not in clean  # never saved: checkpoint contents are as before


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_update_does_not_sync_with_the_host_between_checks():
    sac = SACModule(OBS, A, hidden_dim=16, check_finite_every=1000, log_every_n=1000).cuda()
    data = batches(4, device="cuda")
    sac.update(data[0])  # the first update reads the counter once
    torch.cuda.set_sync_debug_mode("error")
    try:
        for b in data[1:]:
            sac.update(b)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    sac.check_finite()
