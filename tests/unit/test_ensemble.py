"""GaussianEnsemble: vectorised forward against a per-member reference, bounds, losses, normaliser."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mopo_lightning.dynamics.ensemble import DEFAULT_WEIGHT_DECAYS, GaussianEnsemble

OBS, ACT, E = 11, 3, 7


def _ensemble(seed: int = 0) -> GaussianEnsemble:
    torch.manual_seed(seed)
    ens = GaussianEnsemble(OBS, ACT, num_members=E)
    # non-trivial statistics and biases, so that the reference checks every term
    ens.fit_normalizer(torch.randn(500, OBS + ACT) * torch.linspace(0.5, 3, OBS + ACT) + 2.0)
    with torch.no_grad():
        for b in ens.biases:
            b.normal_(0, 0.1)
    return ens


def _reference(ens: GaussianEnsemble, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain loop over members with F.linear: inputs [E, B, in] -> mean, logvar [E, B, out]."""
    means, logvars = [], []
    for e in range(ens.num_members):
        x = (inputs[e] - ens.input_mean) / ens.input_std
        n = len(ens.weights)
        for i in range(n):
            x = F.linear(x, ens.weights[i][e].T, ens.biases[i][e, 0])
            if i < n - 1:
                x = x * torch.sigmoid(x)
        mean, raw = x[:, : ens.out_dim], x[:, ens.out_dim :]
        logvar = ens.max_logvar - F.softplus(ens.max_logvar - raw)
        logvar = ens.min_logvar + F.softplus(logvar - ens.min_logvar)
        means.append(mean)
        logvars.append(logvar)
    return torch.stack(means), torch.stack(logvars)


def test_vectorised_forward_equals_per_member_loop():
    ens = _ensemble()
    inputs = torch.randn(E, 64, OBS + ACT) * 2 + 1
    mean, logvar = ens(inputs)
    ref_mean, ref_logvar = _reference(ens, inputs)
    assert mean.shape == logvar.shape == (E, 64, 1 + OBS)
    torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logvar, ref_logvar, atol=1e-5, rtol=1e-5)


def test_shared_batch_broadcasts_to_every_member():
    ens = _ensemble()
    inputs = torch.randn(40, OBS + ACT)
    mean, logvar = ens(inputs)
    ref_mean, ref_logvar = _reference(ens, inputs.expand(E, -1, -1))
    torch.testing.assert_close(mean, ref_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logvar, ref_logvar, atol=1e-5, rtol=1e-5)


def test_predict_adds_state_and_returns_std():
    ens = _ensemble()
    obs, act = torch.randn(300, OBS), torch.rand(300, ACT) * 2 - 1
    mean, std = ens.predict(obs, act, chunk_size=128)  # several chunks, the last one short
    ref_mean, ref_logvar = _reference(ens, torch.cat([obs, act], -1).expand(E, -1, -1))
    torch.testing.assert_close(mean[..., 0], ref_mean[..., 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(mean[..., 1:], ref_mean[..., 1:] + obs, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(std, torch.exp(ref_logvar / 2), atol=1e-5, rtol=1e-5)
    assert not mean.requires_grad


def test_logvar_is_softly_bounded():
    ens = _ensemble()
    raw = torch.linspace(-100, 100, 2001).unsqueeze(-1).expand(-1, ens.out_dim)
    logvar = ens.bound_logvar(raw).detach()
    hi, lo = ens.max_logvar.detach(), ens.min_logvar.detach()
    overshoot = torch.log1p(torch.exp(lo - hi))  # the second softplus can lift the top by this much
    assert (logvar <= hi + overshoot + 1e-6).all()
    assert (logvar >= ens.min_logvar.detach() - 1e-6).all()
    assert torch.all(logvar[1:] >= logvar[:-1])  # monotone
    torch.testing.assert_close(ens.max_logvar.detach(), torch.full((ens.out_dim,), 0.5))
    torch.testing.assert_close(ens.min_logvar.detach(), torch.full((ens.out_dim,), -10.0))


def test_loss_terms_match_their_formulas():
    ens = _ensemble()
    inputs, targets = torch.randn(E, 32, OBS + ACT), torch.randn(E, 32, 1 + OBS)
    nll, mse = ens.nll_loss(inputs, targets)
    mean, logvar = _reference(ens, inputs)
    per_member = ((mean - targets) ** 2 * torch.exp(-logvar)).mean((1, 2)) + logvar.mean((1, 2))
    torch.testing.assert_close(nll, per_member.sum(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mse, ((mean - targets) ** 2).mean((1, 2)), rtol=1e-5, atol=1e-6)

    decay = sum(wd * (w**2).sum() / 2 for wd, w in zip(DEFAULT_WEIGHT_DECAYS, ens.weights, strict=True))
    torch.testing.assert_close(ens.weight_decay_loss(), decay)
    assert len(ens.weights) == 5  # 4 hidden layers + the head: one decay each, biases excluded
    assert [w.shape for w in ens.weights] == [
        (E, 14, 200), (E, 200, 200), (E, 200, 200), (E, 200, 200), (E, 200, 2 * (1 + OBS))
    ]
    assert float(ens.logvar_bound_loss().detach()) == pytest.approx((0.5 + 10.0) * (1 + OBS))


def test_normaliser_uses_population_std_and_guards_constant_columns():
    ens = GaussianEnsemble(OBS, ACT, num_members=E)
    x = torch.randn(1000, OBS + ACT, dtype=torch.float64).float() * 3 + 1
    x[:, 4] = 7.0  # constant column: std 0 -> 1
    ens.fit_normalizer(x)
    assert bool(ens.normalizer_fitted)
    torch.testing.assert_close(ens.input_mean, x.mean(0))
    expected_std = x.std(0, unbiased=False)
    expected_std[4] = 1.0
    torch.testing.assert_close(ens.input_std, expected_std)
    names = dict(ens.named_buffers())
    assert {"input_mean", "input_std", "elites", "normalizer_fitted"} <= set(names)


def test_initialisation_follows_the_authors_truncated_normal():
    ens = GaussianEnsemble(OBS, ACT, num_members=E)
    for w, b in zip(ens.weights, ens.biases, strict=True):
        std = 1 / (2 * w.shape[1] ** 0.5)
        assert w.abs().max() <= 2 * std + 1e-7
        assert abs(float(w.std()) - std * 0.88) < 0.1 * std  # std of a 2-sigma truncated normal
        assert torch.all(b == 0)
