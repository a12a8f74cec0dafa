"""Throughput of the dynamics ensemble (MOPO / MBPO's 7 x (4 x 200) probabilistic ensemble), 1 thread.

Prints and writes ``benchmarks/results/dynamics.json``:
- ms per training epoch per 10,000 rows (``trainer.fit`` with the project's loaders and module);
- ms per 256-row step (forward + backward + Adam) for all 7 members;
- seconds for one ``predict`` on 50,000 rows (fp32);
- the same step and prediction for a per-member loop of ``nn.Linear`` MLPs, and the speed-up.
Shapes are Hopper's (11 + 3 -> 1 + 11); timings do not depend on the values, so the data is synthetic.

``--profile`` prints instead where one stage-1 step's time goes (``step_profile``). Measured (2-core AMD EPYC,
AVX-512, 1 thread, otherwise idle, two runs): of 24.7-26.5 ms, the 14 batched matmuls (5 forward, 9 backward)
17.3 ms (~68%; 1.36 GFLOP, ~80 GFLOP/s), SiLU forward and backward 2.2-2.8, fused Adam and the decay 0.6-0.7,
every other op (normalising, the log-variance bounds, the NLL, the sums) 1.9-2.0, outside ops (Python,
autograd's engine, and the profiler's noise) 2.1-4.3. Candidates, each as a whole step interleaved with the
current one (min / median ms of 15 rounds of 20 steps, two sessions): SiLU as an autograd Function saving
sigmoid 22.1 / 23.4 against 21.6 / 22.7; ``bmm`` then an in-place bias add instead of ``baddbmm`` 20.8 / 22.0
against 21.6 / 22.7 (the other session: 20.9 / 22.3 against 21.1 / 21.8); a hand-written backward of the whole
step 21.0 / 23.1 against 20.3 / 20.7; ``torch.compile`` of the loss 20.0 / 20.9 against 21.0 / 22.0 (and 19.9
/ 20.9 against 20.1 / 21.8), after 4-9 s of compiling. Only compile is ahead beyond the noise, by ~1-5%; it is
not adopted (docs/performance.md). The step runs at its matmuls' speed.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from tensordict import TensorDict
from torch import nn

from mopo_lightning.dynamics.batches import dynamics_dataloaders
from mopo_lightning.dynamics.ensemble import DEFAULT_WEIGHT_DECAYS, GaussianEnsemble
from mopo_lightning.dynamics.module import DynamicsModule

torch.set_num_threads(1)

OBS, ACT, E, BATCH = 11, 3, 7, 256
RESULTS = Path(__file__).parent / "results" / "dynamics.json"


class LoopEnsemble(nn.Module):
    """The reference the vectorised ensemble replaces: one nn.Sequential per member, a Python loop."""

    def __init__(self, obs_dim: int, act_dim: int, members: int = E, hidden: int = 200) -> None:
        super().__init__()
        out = 1 + obs_dim
        sizes = [obs_dim + act_dim] + [hidden] * 4
        self.members = nn.ModuleList()
        for _ in range(members):
            layers: list[nn.Module] = []
            for a, b in itertools.pairwise(sizes):
                layers += [nn.Linear(a, b), nn.SiLU()]
            layers.append(nn.Linear(hidden, 2 * out))
            self.members.append(nn.Sequential(*layers))
        self.max_logvar = nn.Parameter(torch.full((out,), 0.5))
        self.min_logvar = nn.Parameter(torch.full((out,), -10.0))
        self.out = out

    def member(self, e: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.members[e](x).split(self.out, -1)
        logvar = self.max_logvar - nn.functional.softplus(self.max_logvar - raw)
        return mean, self.min_logvar + nn.functional.softplus(logvar - self.min_logvar)

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        total = 0.01 * (self.max_logvar.sum() - self.min_logvar.sum())
        for e, net in enumerate(self.members):
            mean, logvar = self.member(e, inputs[e])
            total = total + ((mean - targets[e]) ** 2 * torch.exp(-logvar)).mean() + logvar.mean()
            linears = [m for m in net if isinstance(m, nn.Linear)]
            decays = zip(DEFAULT_WEIGHT_DECAYS, linears, strict=True)
            total = total + sum(wd * m.weight.square().sum() / 2 for wd, m in decays)
        return total

    @torch.no_grad()
    def predict(self, obs: torch.Tensor, act: torch.Tensor, chunk: int | None = None):
        """Each member over all rows (``chunk`` rows at a time if given) -> mean, std [E, B, out]."""
        x = torch.cat([obs, act], -1)
        parts = x.split(chunk or len(x))
        outs = [[self.member(e, p) for p in parts] for e in range(len(self.members))]
        mean = torch.stack([torch.cat([m for m, _ in o]) for o in outs])
        mean[..., 1:] += obs
        return mean, torch.stack([torch.exp(torch.cat([lv for _, lv in o]) / 2) for o in outs])


def make_stepper(loss_fn, params, inputs, targets):
    """A closure running one fwd + bwd + Adam step."""
    opt = torch.optim.Adam(params, lr=1e-3, fused=True)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(inputs, targets).backward()
        opt.step()

    return step


def interleaved(fns: dict, n: int, rounds: int = 5) -> dict[str, float]:
    """Best-of-rounds seconds per call for each fn, alternating between them (the machine is shared:
    interleaving exposes every candidate to the same load, and the minimum is the least noisy)."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            for _ in range(n):
                fn()
            best[key] = min(best[key], (time.perf_counter() - start) / n)
    return best


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.times.append(time.perf_counter() - self._start)


def epoch_ms_per_10k(n: int = 20_000, epochs: int = 4) -> float:
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(n, OBS, generator=g)
    act = torch.rand(n, ACT, generator=g) * 2 - 1
    td = TensorDict({"observation": obs, "action": act,
                     "next": {"observation": obs + 0.1 * torch.randn(n, OBS, generator=g),
                              "reward": torch.randn(n, 1, generator=g)}}, [n])
    data = dynamics_dataloaders(td, num_members=E, batch_size=BATCH, seed=0)
    timer = EpochTimer()
    trainer = pl.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", callbacks=[timer])
    trainer.fit(DynamicsModule(OBS, ACT, max_epochs=epochs), data.train, data.holdout)
    per_epoch = min(timer.times[1:])  # the first epoch pays the warm-up
    return per_epoch * 1e3 * 10_000 / data.train_inputs.shape[0]


CATEGORIES = {"matmul": ("aten::bmm", "aten::baddbmm", "aten::mm", "aten::addmm"),
              "silu": ("aten::silu", "aten::silu_backward"),
              "adam and decay": ("aten::_fused_adam_", "aten::add_", "aten::_foreach_norm",
                                 "aten::linalg_vector_norm")}


def step_profile(step, n: int = 50) -> dict[str, float]:
    """ms per step by kind of op (``torch.profiler`` self CPU time) and the rest of the wall time (Python,
    autograd bookkeeping, the profiler's own cost): where a stage-1 step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(10):
        step()
    start = time.perf_counter()
    for _ in range(n):
        step()
    wall = (time.perf_counter() - start) / n * 1e3
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    out = dict.fromkeys([*CATEGORIES, "other ops"], 0.0)
    for event in prof.key_averages():
        if not event.key.startswith("aten::"):
            continue  # autograd and optimizer wrappers: their ops are counted by name
        kind = next((k for k, names in CATEGORIES.items() if event.key in names), "other ops")
        out[kind] += event.self_cpu_time_total / 1e3 / n
    out["outside ops"] = max(0.0, wall - sum(out.values()))
    return {"wall": wall, **out}


def module_step(module: DynamicsModule, inputs, targets):
    """``DynamicsModule.training_step``'s maths without a Trainer: in-place weight-decay gradient, one fused Adam
    step."""
    ens = module.ensemble
    opt = torch.optim.Adam(ens.parameters(), lr=1e-3, fused=True)
    weights = list(ens.weights)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nll, _ = ens.nll_loss(inputs, targets)
        loss = nll + 0.01 * ens.logvar_bound_loss()
        bool(torch.isfinite(loss))
        loss.backward()
        ens.add_weight_decay_grad(weights)
        ens.weight_decay_value(weights)
        opt.step()

    return step


def main() -> dict:
    torch.manual_seed(0)
    vec, loop = GaussianEnsemble(OBS, ACT, num_members=E), LoopEnsemble(OBS, ACT)
    vec.fit_normalizer(torch.randn(1000, OBS + ACT))
    inputs, targets = torch.randn(E, BATCH, OBS + ACT), torch.randn(E, BATCH, 1 + OBS)
    if "--profile" in sys.argv[1:]:
        module = DynamicsModule(OBS, ACT)
        module.fit_normalizer(torch.randn(1000, OBS + ACT))
        figures = step_profile(module_step(module, inputs, targets))
        print(f"stage-1 step, ms (1 thread, load {os.getloadavg()[0]:.2f}): "
              + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
        return figures

    def vec_loss(x, y):
        nll, _ = vec.nll_loss(x, y)
        return nll + 0.01 * vec.logvar_bound_loss() + vec.weight_decay_loss()

    steps = interleaved(
        {"vec": make_stepper(vec_loss, vec.parameters(), inputs, targets),
         "loop": make_stepper(loop.loss, loop.parameters(), inputs, targets)},
        n=20,
    )
    step_vec, step_loop = steps["vec"] * 1e3, steps["loop"] * 1e3

    obs, act = torch.randn(50_000, OBS), torch.rand(50_000, ACT) * 2 - 1
    preds = interleaved(
        {"fp32": lambda: vec.predict(obs, act), "loop": lambda: loop.predict(obs, act),
         "loop_chunked": lambda: loop.predict(obs, act, chunk=1024)},
        n=1, rounds=3,
    )
    pred_vec, pred_loop = preds["fp32"], preds["loop"]

    results = {
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "epoch_ms_per_10k_rows": epoch_ms_per_10k(),
        "step_ms_256_all_members": step_vec,
        "step_ms_256_loop": step_loop,
        "step_speedup_vs_loop": step_loop / step_vec,
        "predict_50k_s_fp32": pred_vec,
        "predict_50k_s_loop": pred_loop,
        "predict_speedup_vs_loop": pred_loop / pred_vec,
        "predict_50k_s_loop_chunked_1024": preds["loop_chunked"],
        "predict_speedup_vs_chunked_loop": preds["loop_chunked"] / pred_vec,
    }
    print(f"{'metric':<32}{'value':>12}")
    for key, value in results.items():
        print(f"{key:<32}{value:>12.3f}" if isinstance(value, float) else f"{key:<32}{value!s:>12}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
