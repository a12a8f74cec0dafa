"""The GPU path on a real CUDA device: the same numbers as on the CPU, to float reordering.

Skipped where ``torch.cuda.is_available()`` is false (CI and the developers' machines have no GPU); run by
``scripts/gpu_check.sh`` on a CUDA machine. Each test compares the CUDA result with the CPU result of the
same code on the same inputs:

- the dynamics ensemble's forward and gradients, and three Lightning-trained stage-1 epochs;
- the 50,000-state model step and branched rollouts through ``ModelRollouts`` on the device;
- SAC updates (the actor's noise drawn on the CPU for both, so both see the same numbers);
- ``mopo-lightning fit`` on ``--trainer.accelerator gpu`` through the real CLI: both stages, a CPU-loadable
  checkpoint, and a resumed run bit-identical to a straight one (on one device, deterministic kernels).

TF32 stays off (torch's default for fp32 matmuls), so the tolerances below are plain fp32 reordering.
"""

from __future__ import annotations

import copy
import json
import os
import time

import lightning as L
import pytest
import torch
from conftest import collected_dataset, random_sac_batches, run_cli

from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.dynamics.batches import dynamics_dataloaders
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.dynamics.module import DynamicsModule
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.model_env.env import model_step
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.model_env.penalties import uncertainty_penalty
from mopo_lightning.model_env.rollouts import ModelRollouts, RolloutSchedule
from mopo_lightning.policy import networks
from mopo_lightning.policy.sac import LOG_KEYS, SACModule

# MOPO_CUDA_TESTS_ON=cpu dry-runs these tests' own logic on the CPU (CPU against CPU), to check them where no
# GPU is; it proves nothing about CUDA.
CUDA = torch.device(os.environ.get("MOPO_CUDA_TESTS_ON", "cuda"))
ACCELERATOR = "gpu" if CUDA.type == "cuda" else CUDA.type
pytestmark = pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs CUDA")


def _sync() -> None:
    if CUDA.type == "cuda":
        torch.cuda.synchronize()
OBS, ACT = 17, 6  # HalfCheetah sizes


def _ensemble(seed: int = 0) -> GaussianEnsemble:
    torch.manual_seed(seed)
    ens = GaussianEnsemble(OBS, ACT)
    ens.fit_normalizer(torch.randn(4096, OBS + ACT) * 3 + 1)
    return ens


def test_ensemble_forward_and_gradients_match_cpu():
    cpu = _ensemble()
    gpu = copy.deepcopy(cpu).to(CUDA)
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(7, 256, OBS + ACT, generator=g) * 2
    targets = torch.randn(7, 256, 1 + OBS, generator=g)
    losses = []
    for ens, device in ((cpu, "cpu"), (gpu, CUDA)):
        nll, mse = ens.nll_loss(inputs.to(device), targets.to(device))
        loss = nll + 0.01 * ens.logvar_bound_loss() + ens.weight_decay_loss()
        loss.backward()
        losses.append((loss.detach(), mse))
    torch.testing.assert_close(losses[1][0].cpu(), losses[0][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses[1][1].cpu(), losses[0][1], rtol=1e-4, atol=1e-6)
    for (name, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        scale = p_cpu.grad.abs().max().clamp_min(1e-12)
        torch.testing.assert_close(p_gpu.grad.cpu() / scale, p_cpu.grad / scale, rtol=0, atol=1e-4, msg=name)
    # [B, in] inputs (one batch for all members), as the rollouts call it
    with torch.no_grad():
        mean_c, logvar_c = cpu(inputs[0])
        mean_g, logvar_g = gpu(inputs[0].to(CUDA))
    torch.testing.assert_close(mean_g.cpu(), mean_c, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logvar_g.cpu(), logvar_c, rtol=1e-4, atol=1e-5)


def _stage1(device: str, tmp_path) -> DynamicsModule:
    td = load_dataset(collected_dataset("hopper", 2_000, seed=0), "hopper")
    data = dynamics_dataloaders(td, seed=0)
    torch.manual_seed(0)
    module = DynamicsModule(obs_dim=11, act_dim=3, max_epochs=3)
    module.fit_normalizer(data.train_inputs)
    trainer = L.Trainer(max_epochs=-1, num_sanity_val_steps=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator=device, devices=1,
                        default_root_dir=tmp_path / device)
    trainer.fit(module, data.train, data.holdout)
    return module


def test_stage1_epochs_on_cuda_train_the_cpu_model(tmp_path):
    """Three Lightning-trained epochs of the real stage-1 step (manual optimisation, fused decay gradient,
    holdout scoring, member snapshots) on the GPU reach the CPU's holdout MSE per member."""
    cpu = _stage1("cpu", tmp_path)
    gpu = _stage1(ACCELERATOR, tmp_path)
    assert int(gpu.early_stopping.epochs) == 3 and bool(gpu.finalized)
    # as tests/integration/test_fast_dynamics.py: the same holdout MSE per member, to float reordering (1%)
    torch.testing.assert_close(gpu.early_stopping.best_mse.cpu(), cpu.early_stopping.best_mse, rtol=0.01,
                               atol=0)


def test_model_step_and_50k_state_rollouts_on_cuda():
    n = 50_000
    cpu = _ensemble().eval()
    gpu = copy.deepcopy(cpu).to(CUDA)
    g = torch.Generator().manual_seed(2)
    obs, action = torch.randn(n, OBS, generator=g), torch.rand(n, ACT, generator=g) * 2 - 1
    mean_c, std_c = cpu.predict(obs, action)  # CPU: in chunks of 1024
    mean_g, std_g = gpu.predict(obs.to(CUDA), action.to(CUDA))  # one batch
    torch.testing.assert_close(mean_g.cpu(), mean_c, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(std_g.cpu(), std_c, rtol=1e-4, atol=1e-6)
    for kind in ("aleatoric", "disagreement"):
        torch.testing.assert_close(uncertainty_penalty(mean_g, std_g, kind).cpu(),
                                   uncertainty_penalty(mean_c, std_c, kind), rtol=1e-4, atol=1e-5)

    # the sampled step draws (elite pick, then noise) from the env's CUDA generator: replayed here on the
    # CPU predictions, the step must give the same next states and penalised rewards
    elites = torch.tensor([1, 2, 4, 5, 6])
    cpu.elites.copy_(elites)
    gpu.elites.copy_(elites)
    gen = torch.Generator(device=CUDA).manual_seed(0)
    replay = torch.Generator(device=CUDA).set_state(gen.get_state())
    step = model_step(gpu, obs.to(CUDA), action.to(CUDA), ModelMDP(get_task("halfcheetah").termination_fn, 1.0), gen)
    assert step["observation"].device.type == CUDA.type and step.shape == (n,)
    member = elites[torch.randint(5, (n,), generator=replay, device=CUDA).cpu()]
    eps = torch.randn((n, 1 + OBS), generator=replay, device=CUDA).cpu()
    rows = torch.arange(n)
    expected = mean_c[member, rows] + eps * std_c[member, rows]
    torch.testing.assert_close(step["observation"].cpu(), expected[:, 1:], rtol=1e-4, atol=1e-4)
    u = uncertainty_penalty(mean_c, std_c).unsqueeze(-1)
    torch.testing.assert_close(step["penalty"].cpu(), u, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(step["reward"].cpu(), expected[:, :1] - u, rtol=1e-4, atol=1e-4)

    sac = SACModule(OBS, ACT).to(CUDA)
    seconds = {}
    for name, length in (("halfcheetah", 5), ("hopper", 5)):
        spec = get_task(name)
        rollouts = ModelRollouts(
            torch.randn(20_000, spec.obs_dim), spec.act_dim, ModelMDP(spec.termination_fn, 1.0, rollout_length=length),
            RolloutSchedule(rollout_batch_size=n, rollout_freq=1000, model_retain_epochs=5), sample_size=244,
            generator=torch.Generator().manual_seed(0),
        )
        ens = _ensemble() if name == "halfcheetah" else GaussianEnsemble(spec.obs_dim, spec.act_dim)
        rollouts.attach(ens.eval())
        policy = sac.policy_module() if name == "halfcheetah" else SACModule(spec.obs_dim, spec.act_dim).to(
            CUDA).policy_module()
        rollouts.rollout(policy, 0, CUDA)  # warm-up: kernels, allocator
        _sync()
        start = time.perf_counter()
        stats = rollouts.rollout(policy, 0, CUDA)
        _sync()
        seconds[name] = time.perf_counter() - start
        assert next(ens.parameters()).device.type == CUDA.type
        assert all(leaf.device.type == "cpu" for leaf in rollouts.buffer.leaves)  # the buffer: on the CPU
        if name == "halfcheetah":  # never terminates: every row runs all h steps
            assert stats.scalars["rollout/transitions"] == n * length and len(rollouts) == 2 * n * length
        else:
            assert n <= stats.scalars["rollout/transitions"] <= n * length
        batch = rollouts.sample()
        assert batch.shape == (244,) and bool(torch.isfinite(batch["next", "observation"]).all())
    where = torch.cuda.get_device_name() if CUDA.type == "cuda" else "cpu"
    print(f"\n50k-state rollout, h 5, on {where}: "
          + ", ".join(f"{k} {v:.3f} s" for k, v in seconds.items()))


def _cpu_noise(monkeypatch, seed: int) -> None:
    """The actor's reparameterisation noise drawn from one CPU generator, then moved to the input's device."""
    g = torch.Generator().manual_seed(seed)
    randn_like = torch.randn_like

    def noise(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=t.dtype).to(t.device)

    monkeypatch.setattr(networks.torch, "randn_like", noise)
    assert networks.torch.randn_like is not randn_like


def _train_sac(sac: SACModule, data, device) -> list[torch.Tensor]:
    return [torch.stack(list(sac.update(b.to(device)).values())).cpu() for b in data]


def test_sac_updates_on_cuda_match_cpu(monkeypatch):
    torch.manual_seed(0)
    cpu = SACModule(OBS, ACT, check_finite_every=1000)
    gpu = copy.deepcopy(cpu).to(CUDA)
    data = random_sac_batches(20, OBS, ACT, 256, seed=3)
    _cpu_noise(monkeypatch, 7)
    logs_cpu = _train_sac(cpu, data, "cpu")
    _cpu_noise(monkeypatch, 7)
    logs_gpu = _train_sac(gpu, data, CUDA)
    gpu.check_finite()
    assert int(gpu.sac_updates) == 20
    for i, (a, b) in enumerate(zip(logs_cpu, logs_gpu, strict=True)):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-4,
                                   msg=lambda m, i=i: f"update {i + 1} {LOG_KEYS}: {m}")
    # Adam moves each weight by at most ~lr per update: 2e-4 is under one update's step of 3e-4
    for (name, p_cpu), p_gpu in zip(cpu.state_dict().items(), gpu.state_dict().values(), strict=True):
        torch.testing.assert_close(p_gpu.cpu(), p_cpu, rtol=1e-3, atol=2e-4,
                                   msg=lambda m, name=name: f"{name}: {m}")


def _fit_args(data) -> list[str]:
    return [
        "fit", "--data.task", "hopper", "--data.path", str(data), "--seed_everything", "0",
        "--trainer.accelerator", ACCELERATOR, "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false",
        "--data.updates_per_epoch", "100", "--mopo.rollout_freq", "100", "--mopo.rollout_batch_size", "5000",
        "--dynamics.max_epochs", "3", "--evaluation.num_episodes", "3", "--trainer.log_every_n_steps", "25",
    ]


@pytest.fixture(scope="module")
def cuda_fit(tmp_path_factory):
    """``mopo-lightning fit`` on the GPU: 2 epochs straight; then 1 epoch and a resume to 2 (stage 1 from
    the cache)."""
    cwd = tmp_path_factory.mktemp("cuda_fit")
    args = _fit_args(collected_dataset("hopper", 2_000, seed=0))
    straight = run_cli(*args, "--run_name", "straight", "--trainer.max_epochs", "2", cwd=cwd)
    run_cli(*args, "--run_name", "resumed", "--trainer.max_epochs", "1", cwd=cwd)
    run_cli(*args, "--run_name", "resumed", "--trainer.max_epochs", "2", "--ckpt_path", "last", cwd=cwd)
    return cwd / "checkpoints", straight


def test_fit_on_cuda_trains_both_stages_on_the_gpu(cuda_fit):
    runs, _ = cuda_fit
    # Lightning saves the state on the device it trained on: the SAC stage ran on the GPU
    state = torch.load(runs / "straight" / "sac" / "last.ckpt", weights_only=True)["state_dict"]
    assert state["actor.net.0.weight"].device.type == CUDA.type
    results = json.loads((runs / "straight" / "results.json").read_text())
    assert results["dynamics"]["epochs"] == 3
    assert [e["sac_updates"] for e in results["evaluations"]] == [100, 200]
    assert all(e["return_mean"] == e["return_mean"] for e in results["evaluations"])  # not NaN
    print(f"\nfit on CUDA: seconds {results['seconds']}")
    # a GPU-trained checkpoint loads and acts on a machine without one
    module = SACModule.load_from_checkpoint(runs / "straight" / "sac" / "last.ckpt", map_location="cpu",
                                            weights_only=True)
    assert module.act(torch.zeros(2, 11), deterministic=True).shape == (2, 3)


def test_fit_on_cuda_resumes_bit_identically(cuda_fit):
    runs, _ = cuda_fit
    states, returns = [], []
    for run in ("straight", "resumed"):
        ckpt = torch.load(runs / run / "sac" / "last.ckpt", map_location="cpu", weights_only=True)
        states.append(ckpt["state_dict"])
        results = json.loads((runs / run / "results.json").read_text())
        returns.append([e["return_mean"] for e in results["evaluations"]])
    assert int(states[1]["sac_updates"]) == 200
    differing = [k for k in states[0] if not torch.equal(states[0][k], states[1][k])]
    assert not differing, f"resumed run differs from the straight one in {differing}"
    assert returns[0] == returns[1]
