"""SAC update throughput: TorchRL ``SACLoss`` vs hand-written updates (batch 256, 1 thread, CPU).

Decides how ``mopo_lightning/policy/sac.py`` is written: SACLoss is used only if it comes within 10%
of the fastest hand-written update. Variants, all with MOPO's networks (2 x 256 ReLU actor and twin
critics, learned alpha, soft targets every update, three Adams):

- ``torchrl_sacloss``: TorchRL's recipe (ProbabilisticActor + TanhNormal, ValueOperator, SACLoss with
  TD0, SoftUpdate; one backward of the summed losses, three optimizer steps).
- ``hand_plain``: plain torch, two ``nn.Sequential`` critics, per-tensor target loop.
- ``hand_module_unfused``: ``SACModule.update`` (critic ensemble via baddbmm, detached critic
  weights in the actor loss, ``_foreach_lerp_`` targets) with the default Adam kernel.
- ``hand_module``: ``SACModule.update`` as shipped (``Adam(fused=True)``; the TensorDict loss terms of
  ``policy/losses.py`` and the device-side NaN record included, eager: ``benchmarks/gpu.py`` times
  the compiled variants).

Timing: per-update wall time, variants interleaved in rounds (fair under background load), median
after warm-up. Prints a table and writes ``benchmarks/results/sac_update.json``.
Usage: ``python benchmarks/sac_update.py [--updates 300] [--warmup 50] [--obs-dim 17] [--act-dim 6]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from tensordict import TensorDict
from torch import nn

from mopo_lightning.policy.networks import TanhGaussianActor, mlp
from mopo_lightning.policy.sac import SACModule

torch.set_num_threads(1)

B, HIDDEN, LR, GAMMA, TAU = 256, 256, 3e-4, 0.99, 5e-3


def make_batches(obs_dim: int, act_dim: int, n: int = 16) -> list[TensorDict]:
    return [
        TensorDict(
            {
                "observation": torch.randn(B, obs_dim),
                "action": torch.rand(B, act_dim) * 2 - 1,
                ("next", "observation"): torch.randn(B, obs_dim),
                ("next", "reward"): torch.randn(B, 1),
                ("next", "terminated"): torch.rand(B, 1) < 0.05,
                ("next", "done"): torch.zeros(B, 1, dtype=torch.bool),
            },
            batch_size=[B],
        )
        for _ in range(n)
    ]


class _CatMLP(nn.Module):
    """Q(s, a) = MLP([s, a]) for TorchRL's ValueOperator, which passes its in_keys positionally."""

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.net = mlp(in_dim, 1, HIDDEN, 2)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs, action], -1))


def torchrl_sacloss(obs_dim: int, act_dim: int):
    from tensordict.nn import NormalParamExtractor, TensorDictModule
    from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
    from torchrl.objectives import SACLoss, SoftUpdate, ValueEstimators

    net = nn.Sequential(mlp(obs_dim, 2 * act_dim, HIDDEN, 2), NormalParamExtractor())
    actor = ProbabilisticActor(
        TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        distribution_class=TanhNormal,
        distribution_kwargs={"low": -1.0, "high": 1.0},
        return_log_prob=True,
    )
    qvalue = ValueOperator(_CatMLP(obs_dim + act_dim), in_keys=["observation", "action"])
    loss = SACLoss(actor, qvalue, num_qvalue_nets=2, target_entropy=-3.0, alpha_init=1.0)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    updater = SoftUpdate(loss, tau=TAU)
    opts = [
        torch.optim.Adam(loss.actor_network_params.flatten_keys().values(), lr=LR),
        torch.optim.Adam(loss.qvalue_network_params.flatten_keys().values(), lr=LR),
        torch.optim.Adam([loss.log_alpha], lr=LR),
    ]

    def step(batch: TensorDict) -> None:
        out = loss(batch)
        (out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]).backward()
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)
        updater.step()

    return step


def hand_plain(obs_dim: int, act_dim: int):
    actor = TanhGaussianActor(obs_dim, act_dim, HIDDEN, 2)
    qs = nn.ModuleList([mlp(obs_dim + act_dim, 1, HIDDEN, 2) for _ in range(2)])
    qs_t = [mlp(obs_dim + act_dim, 1, HIDDEN, 2).requires_grad_(False) for _ in range(2)]
    for q, qt in zip(qs, qs_t, strict=True):
        qt.load_state_dict(q.state_dict())
    log_alpha = torch.zeros((), requires_grad=True)
    a_opt, q_opt = torch.optim.Adam(actor.parameters(), LR), torch.optim.Adam(qs.parameters(), LR)
    al_opt = torch.optim.Adam([log_alpha], LR)

    def step(batch: TensorDict) -> None:
        s, a, s2 = batch["observation"], batch["action"], batch["next", "observation"]
        r, term = batch["next", "reward"], batch["next", "terminated"].float()
        alpha = log_alpha.detach().exp()
        with torch.no_grad():
            a2, lp2 = actor.sample(s2)
            x2 = torch.cat([s2, a2], -1)
            y = r + GAMMA * (1 - term) * (torch.min(qs_t[0](x2), qs_t[1](x2)) - alpha * lp2)
        x = torch.cat([s, a], -1)
        q_loss = 0.5 * ((qs[0](x) - y).pow(2).mean() + (qs[1](x) - y).pow(2).mean())
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()
        pa, lp = actor.sample(s)
        xp = torch.cat([s, pa], -1)
        a_loss = (alpha * lp - torch.min(qs[0](xp), qs[1](xp))).mean()
        a_opt.zero_grad()
        a_loss.backward()
        a_opt.step()
        al_loss = -(log_alpha * (lp.detach() - 3.0)).mean()
        al_opt.zero_grad()
        al_loss.backward()
        al_opt.step()
        with torch.no_grad():
            for q, qt in zip(qs, qs_t, strict=True):
                for p, pt in zip(q.parameters(), qt.parameters(), strict=True):
                    pt.mul_(1 - TAU).add_(p, alpha=TAU)

    return step


def hand_module(obs_dim: int, act_dim: int, fused: bool = True):
    module = SACModule(obs_dim, act_dim, hidden_dim=HIDDEN)
    if not fused:  # the module defaults to fused Adam; this variant measures the default kernel
        module._standalone_optimizers = [
            torch.optim.Adam(g, lr=LR)
            for g in (module.actor.parameters(), module.critic.parameters(), [module.log_alpha])
        ]
    return module.update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=300, help="timed updates per variant")
    parser.add_argument("--warmup", type=int, default=50, help="untimed updates per variant first")
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "sac_update.json")
    args = parser.parse_args()
    torch.manual_seed(0)
    batches = make_batches(args.obs_dim, args.act_dim)
    variants = {
        "torchrl_sacloss": torchrl_sacloss(args.obs_dim, args.act_dim),
        "hand_plain": hand_plain(args.obs_dim, args.act_dim),
        "hand_module_unfused": hand_module(args.obs_dim, args.act_dim, fused=False),
        "hand_module": hand_module(args.obs_dim, args.act_dim),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    rounds, per_round = 10, max(1, args.updates // 10)
    for step in variants.values():
        for i in range(args.warmup):
            step(batches[i % len(batches)])
    for _ in range(rounds):
        for name, step in variants.items():
            for i in range(per_round):
                t0 = time.perf_counter()
                step(batches[i % len(batches)])
                times[name].append(time.perf_counter() - t0)

    rows = {
        k: {"median_ms": 1e3 * statistics.median(v), "updates_per_s": 1 / statistics.median(v)}
        for k, v in times.items()
    }
    best_hand = max(rows[k]["updates_per_s"] for k in rows if k.startswith("hand"))
    for row in rows.values():
        row["relative_to_best_hand"] = row["updates_per_s"] / best_hand
    use_sacloss = rows["torchrl_sacloss"]["relative_to_best_hand"] >= 0.9
    print(f"SAC update, batch {B}, obs {args.obs_dim}, act {args.act_dim}, 2x{HIDDEN} MLPs, 1 thread")
    print(f"{'variant':<20}{'median ms':>12}{'updates/s':>12}{'vs best hand':>14}")
    for name, row in rows.items():
        print(
            f"{name:<20}{row['median_ms']:>12.2f}{row['updates_per_s']:>12.1f}{row['relative_to_best_hand']:>14.2f}"
        )
    print(
        f"decision: {'SACLoss' if use_sacloss else 'hand-written'} (SACLoss kept only within 10% of best hand)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "batch_size": B,
        "obs_dim": args.obs_dim,
        "act_dim": args.act_dim,
        "hidden": HIDDEN,
        "threads": 1,
        "timed_updates_per_variant": rounds * per_round,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "results": rows,
        "decision": "SACLoss" if use_sacloss else "hand-written",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
