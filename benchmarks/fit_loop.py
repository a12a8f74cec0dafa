"""The real ``mopo-lightning fit`` (both stages, through Lightning) beside its components measured alone.

Runs ``mopo_lightning.commands.cli.main(["fit", ...])`` in this process on a generated HalfCheetah file (the
tests' ``collected_dataset``; HalfCheetah never terminates, so every rollout row runs all h steps), in a
fresh temporary run root with its own dynamics cache, so stage 1 really trains: ``--dynamics_epochs``
epochs (``--dynamics.max_epochs N --dynamics.max_time null``), then ``--sac_epochs`` SAC epochs of
``--updates`` updates, one rollout of ``--rollout_batch_size`` x h per epoch, ``--episodes`` evaluation
episodes per epoch. The premise monitor is off unless ``--premise`` (it is a measurement beside training,
not one of the components).

Per-epoch seconds come from hooks wrapped around the two LightningModules' ``on_train_epoch_start`` and
``on_train_end`` (start to start, so an epoch holds everything the loop does in it: steps, holdout scoring,
evaluation, checkpoints). The first epoch of each stage pays warm-ups and is reported but left out of the
median.

Components, measured alone in the same process (same thread count):
- stage 1, right after the run with the trained model: the bare forward + backward + fused-Adam step of
  the ensemble on [7, 256, in] tensors (as ``benchmarks/dynamics.py``) times the steps of one epoch, plus
  one holdout forward;
- stage 2, after every SAC epoch, inside the run but outside the epoch's clock (the run's RNG stream
  untouched), with the run's trained ensemble: one rollout + ``--updates`` SAC updates of a fresh SAC on
  ``MixedSampler`` + one evaluation (as ``benchmarks/epoch.py``). Each epoch is divided by the
  components measured right after it, and the median ratio after the first epoch is reported: this
  machine's speed drifts by 10-20% over minutes, so components measured once, after the run, skewed
  the ratio either way.

``--ab NAME`` measures a shortcut past Lightning that the package used to take (rebuilt here: ``AB_PATHS``)
against Lightning's public path, which the package takes, in place of the components: inside the one run,
blocks of batches alternate between the two paths (``--blocks``: stage 1's and the SAC stage's block sizes; 0
alternates whole epochs), and each batch is timed from its ``training_step``'s start to the next one's, so the
loop's own work after a step counts; the interval that crosses an epoch's end (holdout, epoch logs, checkpoint,
evaluation) is kept apart. The cost is the median difference of adjacent blocks, per batch, then as a share of
that stage's median epoch; epoch-end costs likewise from the boundaries.

Prints a table and writes ``benchmarks/results/fit_loop.json`` (or ``--out``).

    python benchmarks/fit_loop.py [--rows 20000] [--dynamics_epochs 6] [--sac_epochs 3] [--threads 1]
    python benchmarks/fit_loop.py --ab step --blocks 1 1 --dynamics_epochs 10   # also backward, backward_and_step
    python benchmarks/fit_loop.py --ab sac_log --blocks 25 50 --dynamics_epochs 3
    python benchmarks/fit_loop.py --ab stage1_log --blocks 0 100 --dynamics_epochs 16 --sac_epochs 1
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # conftest, policy_data

from conftest import collected_dataset
from policy_data import policy_data

from mopo_lightning.callbacks.evaluation import evaluate_policy
from mopo_lightning.commands import cli
from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.dynamics.module import DynamicsModule
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.training.datamodule import OfflineDataModule

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    """Per-epoch (wall, process CPU) seconds of a LightningModule class's training epochs.

    An epoch runs from its ``on_train_epoch_start`` to the next one's (or to ``on_train_end``).
    ``between(module)``, if given, runs at each of those boundaries after the epoch's end is stamped and
    before the next start is, so its own time counts in no epoch; its results are kept in order.
    """

    def __init__(self, cls: type, between: Callable[[Any], dict] | None = None) -> None:
        self.starts: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []
        self.between_results: list[dict] = []
        start_hook, end_hook = cls.on_train_epoch_start, cls.on_train_end
        clock = self

        def boundary(module) -> None:
            clock.ends.append(now())
            if between is not None:
                clock.between_results.append(between(module))

        def on_train_epoch_start(module) -> None:
            if len(clock.starts) > len(clock.ends):  # the previous epoch ends here
                boundary(module)
            clock.starts.append(now())
            start_hook(module)

        def on_train_end(module) -> None:
            end_hook(module)
            boundary(module)

        cls.on_train_epoch_start, cls.on_train_end = on_train_epoch_start, on_train_end

    def epochs(self, cpu: bool = False) -> list[float]:
        # strict=False: an epoch still running has no end yet
        return [e[cpu] - s[cpu] for s, e in zip(self.starts, self.ends, strict=False)]


class Alternation:
    """Alternates a shortcut with Lightning's public path inside a run of ``cls`` and times every batch.

    ``use(module, public)`` switches ``module`` to one path before each batch; blocks of ``block`` batches alternate
    (0: whole epochs). A batch's interval runs from its ``training_step``'s start to the next one's; the one that
    crosses an epoch's end is a boundary (holdout, epoch-end logs, checkpoints, evaluation).
    """

    def __init__(self, cls: type, use: Callable[[Any, bool], None], block: int) -> None:
        self.records: list[tuple[float, float, int, bool, int]] = []  # wall, CPU, epoch, public, batch
        step = cls.training_step
        records = self.records

        def training_step(module, batch, batch_idx):
            epoch = module.current_epoch
            public = (epoch + (batch_idx // block if block else 0)) % 2 == 1
            use(module, public)
            records.append((*now(), epoch, public, batch_idx))
            return step(module, batch, batch_idx)

        cls.training_step = training_step

    def summary(self, epoch_s: float, log_every: int) -> dict[str, Any]:
        """Each path's median interval (wall and process CPU, ms) and the difference as a share of an ``epoch_s``
        epoch, over: every batch inside an epoch (``batch``), the batches that log (every ``log_every``-th:
        ``logging_batch``) and the epochs' boundaries (``boundary``); and the median difference of adjacent
        blocks (``paired_block``: the block's mean per batch, so the machine's drift cancels)."""
        groups: dict[str, dict[bool, list[tuple[float, float]]]] = {
            name: {False: [], True: []} for name in ("batch", "logging_batch", "boundary")}
        blocks: list[tuple[bool, list[tuple[float, float]]]] = []
        new_block = True
        for a, b in itertools.pairwise(self.records):
            interval, public = (b[0] - a[0], b[1] - a[1]), a[3]
            if b[2] != a[2]:  # crosses the epoch's end
                groups["boundary"][public].append(interval)
                new_block = True
                continue
            groups["batch"][public].append(interval)
            if (a[4] + 1) % log_every == 0:
                groups["logging_batch"][public].append(interval)
            if new_block or blocks[-1][0] != public:
                blocks.append((public, []))
                new_block = False
            blocks[-1][1].append(interval)
        per_epoch = statistics.median(collections.Counter(r[2] for r in self.records).values())
        counts = {"batch": per_epoch, "logging_batch": per_epoch // log_every, "boundary": 1}
        out: dict[str, Any] = {"batches_per_epoch": per_epoch}
        for name, group in groups.items():
            if not (group[False] and group[True]):
                continue
            out[f"{name}_count"] = [len(group[False]), len(group[True])]
            for kind, k in (("", 0), ("cpu_", 1)):
                m0, m1 = (statistics.median(i[k] for i in group[p]) for p in (False, True))
                out.update({f"{name}_shortcut_{kind}ms": 1e3 * m0, f"{name}_public_{kind}ms": 1e3 * m1,
                            f"{name}_cost_{kind}share_of_epoch": (m1 - m0) * counts[name] / epoch_s})
        diffs = [[statistics.mean(i[k] for i in public) - statistics.mean(i[k] for i in shortcut) for k in (0, 1)]
                 for (p1, r1), (p2, r2) in itertools.pairwise(blocks) if p1 != p2
                 for shortcut, public in [(r2, r1) if p1 else (r1, r2)]]
        if diffs:
            out["paired_blocks"] = len(diffs)
            for kind, k in (("", 0), ("cpu_", 1)):
                cost = statistics.median(d[k] for d in diffs)
                out[f"paired_block_cost_{kind}ms"] = 1e3 * cost
                out[f"paired_block_cost_{kind}share_of_epoch"] = cost * per_epoch / epoch_s
        return out


def _shortcut(module, name: str, function: Callable | None) -> None:
    """Override ``module.<name>`` on this instance with ``function`` (None: back to the class's method)."""
    if function is None:
        vars(module).pop(name, None)
    else:
        vars(module)[name] = function


def use_backward(module, public: bool) -> None:
    """Lightning's ``manual_backward`` (public), or ``loss.backward()`` in its place (the removed shortcut)."""
    _shortcut(module, "manual_backward", None if public else lambda loss, *args, **kwargs: loss.backward())


def use_step(module, public: bool) -> None:
    """``LightningOptimizer.step`` (public), or the removed shortcut: the wrapped optimizer's own ``step()`` with
    Lightning's step counter advanced by hand (the counter is private: this benchmark reaches it, the package no
    longer does)."""
    counter = module.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    optimizers = module.optimizers()
    for opt in optimizers if isinstance(optimizers, list) else [optimizers]:
        if public:
            vars(opt).pop("step", None)
            continue

        def step(closure=None, _opt=opt, **kwargs):
            counter.increment_ready()
            _opt.optimizer.step()
            counter.increment_completed()

        vars(opt)["step"] = step


def use_backward_and_step(module, public: bool) -> None:
    use_backward(module, public)
    use_step(module, public)


def use_sac_log(module, public: bool) -> None:
    """``self.log_dict`` of the ``sac/*`` values (public), or the removed shortcut: the logger's ``log_metrics``
    at the step Lightning's on-step log uses (the update's index)."""
    def log_dict(metrics, *args, **kwargs):
        if not all(key.startswith("sac/") for key in metrics):  # the evaluation's own logs stay Lightning's
            return type(module).log_dict(module, metrics, *args, **kwargs)
        if module.logger is not None:
            module.logger.log_metrics(dict(metrics), step=module._n_updates - 1)

    _shortcut(module, "log_dict", None if public else log_dict)


def use_stage1_log(module, public: bool) -> None:
    """``self.log``/``self.log_dict`` of stage 1's scalars (public), or the removed shortcut: the logger's
    ``log_metrics`` at ``global_step``, the headline still ``self.log``ged for callbacks (the removed code passed
    ``logger=False``; Lightning refuses a key logged with other arguments than before, so here it keeps the
    package's, which adds one logger write per epoch to the shortcut's side)."""
    cls = type(module)
    headline = "dynamics/holdout_mse/elites"

    def write(metrics: dict) -> None:
        if module.logger is not None:
            module.logger.log_metrics({k: v for k, v in metrics.items() if k != headline}, step=module.global_step)
        if headline in metrics:
            cls.log(module, headline, metrics[headline], sync_dist=True)  # as the package's log_dict does

    _shortcut(module, "log_dict", None if public else lambda metrics, *args, **kwargs: write(metrics))
    _shortcut(module, "log", None if public else lambda name, value, *args, **kwargs: write({name: value}))


AB_PATHS: dict[str, dict[type, Callable[[Any, bool], None]]] = {
    "backward": {DynamicsModule: use_backward, SACModule: use_backward},
    "step": {DynamicsModule: use_step, SACModule: use_step},
    "backward_and_step": {DynamicsModule: use_backward_and_step, SACModule: use_backward_and_step},
    "sac_log": {SACModule: use_sac_log},
    "stage1_log": {DynamicsModule: use_stage1_log},
}
"""Each removed shortcut, rebuilt here beside Lightning's public path, per module class: ``use(module, public)``."""


def median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:] if len(values) > 1 else values)


def now() -> tuple[float, float]:
    """(wall, process CPU) seconds: CPU time is the steadier figure on a shared machine."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


def bare_dynamics_step(module: DynamicsModule, rounds: int = 7, n: int = 10) -> tuple[float, float]:
    """Median (wall, CPU) seconds of one forward + backward + fused-Adam step on [E, 256, in] tensors,
    on a copy of the model, with the module's maths: NLL + 0.01 logvar bounds through autograd, the weight
    decay's gradient wd * W added by one fused ``_foreach`` call (``DynamicsModule.training_step``)."""
    hp = module.hparams
    ens = type(module.ensemble)(hp.obs_dim, hp.act_dim, hp.num_members, hp.num_elites, hp.hidden_dim,
                                hp.num_layers, hp.weight_decays)
    ens.load_state_dict(module.ensemble.state_dict())
    g = torch.Generator().manual_seed(0)
    x = torch.randn(hp.num_members, 256, ens.in_dim, generator=g)
    y = torch.randn(hp.num_members, 256, ens.out_dim, generator=g)
    opt = torch.optim.Adam(ens.parameters(), lr=1e-3, fused=True)
    weights, decays = list(ens.weights), list(ens.weight_decays)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nll, _ = ens.nll_loss(x, y)
        (nll + 0.01 * ens.logvar_bound_loss()).backward()
        with torch.no_grad():
            torch._foreach_add_([w.grad for w in weights], torch._foreach_mul(weights, decays))
        opt.step()

    for _ in range(3):
        step()
    walls, cpus = [], []
    for _ in range(rounds):
        start = now()
        for _ in range(n):
            step()
        wall, cpu = since(start)
        walls.append(wall / n)
        cpus.append(cpu / n)
    return statistics.median(walls), statistics.median(cpus)


def holdout_seconds(module: DynamicsModule, rows: int) -> tuple[float, float]:
    x = torch.randn(rows, module.ensemble.in_dim)
    with torch.no_grad():
        module.ensemble(x)
        start = now()
        module.ensemble(x)
    return since(start)


def sac_components(path: Path, ensemble: GaussianEnsemble, args: argparse.Namespace) -> dict[str, float]:
    """One rollout of ``ensemble``, ``updates`` SAC updates on mixed batches and one evaluation, each alone."""
    torch.manual_seed(0)
    data = OfflineDataModule(task="halfcheetah", path=str(path), updates_per_epoch=args.updates, seed=0)
    sac = SACModule(data.obs_dim, data.act_dim)
    dm = policy_data(data, ensemble, sac, rollout_length=args.rollout_length,
                     rollout_batch_size=args.rollout_batch_size, rollout_freq=args.updates)
    sac.configure_optimizers()
    policy = sac.policy_module()
    out: dict[str, float] = {}

    def record(name: str, start: tuple[float, float]) -> None:
        out[f"{name}_s"], out[f"{name}_cpu_s"] = since(start)

    start = now()
    dm.rollouts.rollout(policy)
    record("rollout", start)
    for _ in range(20):
        sac.update(dm.sampler())
    start = now()
    for _ in range(args.updates):
        sac.update(dm.sampler())
    record("updates", start)
    start = now()
    for _ in range(args.updates):
        dm.sampler()
    record("sample_batches", start)
    start = now()
    evaluate_policy("halfcheetah", lambda obs: sac.act(obs, deterministic=True), range(args.episodes),
                    policy_batch=args.episodes)
    record("eval", start)
    out["sample_batch_ms"] = out.pop("sample_batches_s") / args.updates * 1e3
    out["sample_batch_cpu_ms"] = out.pop("sample_batches_cpu_s") / args.updates * 1e3
    out["total_s"] = out["rollout_s"] + out["updates_s"] + out["eval_s"]
    out["total_cpu_s"] = out["rollout_cpu_s"] + out["updates_cpu_s"] + out["eval_cpu_s"]
    return out


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--dynamics_epochs", type=int, default=6)
    parser.add_argument("--sac_epochs", type=int, default=3)
    parser.add_argument("--updates", type=int, default=1000)
    parser.add_argument("--rollout_length", type=int, default=5)
    parser.add_argument("--rollout_batch_size", type=int, default=50_000)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="--num_threads of the run (and components)")
    parser.add_argument("--extra", nargs="*", default=[], help="more fit arguments, e.g. --threads.rollout 2")
    parser.add_argument("--premise", action="store_true", help="keep the premise monitor on")
    parser.add_argument("--ab", choices=sorted(AB_PATHS), default=None,
                        help="alternate this shortcut with Lightning's public path (no components)")
    parser.add_argument("--blocks", type=int, nargs=2, default=(25, 100), metavar=("STAGE1", "SAC"),
                        help="--ab: batches per alternating block in each stage (0: whole epochs)")
    parser.add_argument("--log_every", type=int, default=50,
                        help="--ab: the logging period in batches (--trainer.log_every_n_steps, linked to SAC's)")
    parser.add_argument("--label", default="")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fit_loop.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    path = collected_dataset("halfcheetah", args.rows, seed=0)
    holdout_rows = min(int(args.rows * 0.2), 1000)
    steps = math.ceil((args.rows - holdout_rows) / 256)

    def bare_now(module: DynamicsModule) -> dict[str, float]:
        with torch.random.fork_rng():
            (bare, bare_cpu), (holdout, holdout_cpu) = bare_dynamics_step(module), holdout_seconds(module, holdout_rows)
        return {"bare_step_s": bare, "bare_step_cpu_s": bare_cpu,
                "total_s": steps * bare + holdout, "total_cpu_s": steps * bare_cpu + holdout_cpu}

    def components_now(module: SACModule) -> dict[str, float]:
        with torch.random.fork_rng():  # the run's own random stream is left as it was
            return sac_components(path, module.trainer.datamodule.ensemble, args)

    alternations: dict[type, Alternation] = {}
    if args.ab:
        for cls, use in AB_PATHS[args.ab].items():
            alternations[cls] = Alternation(cls, use, args.blocks[cls is SACModule])
        stage1, stage2 = Clock(DynamicsModule), Clock(SACModule)
    else:
        stage1, stage2 = Clock(DynamicsModule, between=bare_now), Clock(SACModule, between=components_now)
    with tempfile.TemporaryDirectory() as tmp:
        run_args = [
            "fit", "--data.task", "halfcheetah", "--data.path", str(path), "--seed_everything", "0",
            "--run_root", tmp, "--run_name", "bench", "--dynamics_cache", f"{tmp}/cache",
            "--num_threads", str(args.threads),
            "--dynamics.max_epochs", str(args.dynamics_epochs), "--dynamics.max_time", "null",
            "--trainer.max_epochs", str(args.sac_epochs), "--data.updates_per_epoch", str(args.updates),
            "--mopo.rollout_freq", str(args.updates), "--mopo.rollout_length", str(args.rollout_length),
            "--mopo.rollout_batch_size", str(args.rollout_batch_size),
            "--evaluation.num_episodes", str(args.episodes), "--trainer.enable_progress_bar", "false",
            *([] if args.premise else ["--premise.every_n_evals", "0"]), *args.extra,
        ]
        start = time.perf_counter()
        cli.main(run_args)
        fit_s = time.perf_counter() - start
        results = json.loads((Path(tmp) / "bench" / "results.json").read_text())
    if args.ab:
        return report_ab(args, stage1, stage2, alternations, load_before, fit_s, results)

    # each epoch against its components measured right after it, in the same process (this machine's
    # speed drifts by 10-20% over minutes, so components measured once would skew the ratio)
    def ratios(clock: Clock, cpu: bool) -> list[float]:
        key = "total_cpu_s" if cpu else "total_s"
        return [e / c[key] for e, c in zip(clock.epochs(cpu=cpu), clock.between_results, strict=True)]

    def medians(clock: Clock) -> dict[str, float]:
        return {k: median_after_first([c[k] for c in clock.between_results]) for k in clock.between_results[0]}

    bare, comp = medians(stage1), medians(stage2)
    e1, e2 = stage1.epochs(), stage2.epochs()
    c1, c2 = stage1.epochs(cpu=True), stage2.epochs(cpu=True)
    s1, s2 = median_after_first(e1), median_after_first(e2)
    s1c, s2c = median_after_first(c1), median_after_first(c2)
    figures = {
        "label": args.label,
        "threads": args.threads,
        "extra": args.extra,
        "rows": args.rows,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "fit_seconds": fit_s,
        "stage1_epochs_s": e1,
        "stage1_epochs_cpu_s": c1,
        "stage1_steps_per_epoch": steps,
        "stage1_epoch_s": s1,
        "stage1_epoch_cpu_s": s1c,
        "stage1_step_ms_in_loop": s1 / steps * 1e3,
        "stage1_step_cpu_ms_in_loop": s1c / steps * 1e3,
        "stage1_bare_step_ms": bare["bare_step_s"] * 1e3,
        "stage1_bare_step_cpu_ms": bare["bare_step_cpu_s"] * 1e3,
        "stage1_component_epoch_s": bare["total_s"],
        "stage1_component_epoch_cpu_s": bare["total_cpu_s"],
        "stage1_ratios_cpu_per_epoch": ratios(stage1, cpu=True),
        "stage1_ratio": median_after_first(ratios(stage1, cpu=False)),
        "stage1_ratio_cpu": median_after_first(ratios(stage1, cpu=True)),
        "holdout_mse_elites": results["dynamics"]["holdout_mse_elites"],
        "stage2_epochs_s": e2,
        "stage2_epochs_cpu_s": c2,
        "stage2_epoch_s": s2,
        "stage2_epoch_cpu_s": s2c,
        **{f"stage2_component_{k}": v for k, v in comp.items()},
        "stage2_component_total_cpu_s_per_epoch": [c["total_cpu_s"] for c in stage2.between_results],
        "stage2_ratios_cpu_per_epoch": ratios(stage2, cpu=True),
        "stage2_ratio": median_after_first(ratios(stage2, cpu=False)),
        "stage2_ratio_cpu": median_after_first(ratios(stage2, cpu=True)),
        "final_return": results.get("final_return"),
    }
    print(f"{'figure':<34}{'value':>14}")
    for key, value in figures.items():
        if isinstance(value, float):
            print(f"{key:<34}{value:>14.4f}")
        elif isinstance(value, (list, tuple)):
            print(f"{key:<34}  {' '.join(f'{v:.3f}' for v in value)}")
        else:
            print(f"{key:<34}{value!s:>14}")
    print(f"stage 1: {s1:.2f} s/epoch in the loop vs {bare['total_s']:.2f} s of bare steps "
          f"({figures['stage1_ratio']:.3f}x wall, {figures['stage1_ratio_cpu']:.3f}x CPU); stage 2: {s2:.2f} "
          f"s/epoch vs {comp['total_s']:.2f} s of components ({figures['stage2_ratio']:.3f}x wall, "
          f"{figures['stage2_ratio_cpu']:.3f}x CPU)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def report_ab(args: argparse.Namespace, stage1: Clock, stage2: Clock, alternations: dict[type, Alternation],
              load_before: tuple[float, ...], fit_s: float, results: dict) -> dict:
    """``--ab``: each stage's paired cost of Lightning's public path over the shortcut."""
    figures: dict[str, Any] = {"ab": args.ab, "blocks": list(args.blocks), "threads": args.threads, "rows": args.rows,
                               "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "fit_seconds": fit_s,
                               "stage1_epochs_s": stage1.epochs(), "stage2_epochs_s": stage2.epochs(),
                               "final_return": results.get("final_return")}
    for name, clock, cls in (("stage1", stage1, DynamicsModule), ("stage2", stage2, SACModule)):
        epoch_s = median_after_first(clock.epochs())
        figures[f"{name}_epoch_s"] = epoch_s
        if cls in alternations:
            summary = alternations[cls].summary(epoch_s, args.log_every)
            figures.update({f"{name}_{k}": v for k, v in summary.items()})
    print(f"{'figure':<40}{'value':>14}")
    for key, value in figures.items():
        if isinstance(value, float):
            print(f"{key:<40}{value:>14.4f}")
        elif isinstance(value, (list, tuple)):
            print(f"{key:<40}  {' '.join(f'{v:.3f}' if isinstance(v, float) else str(v) for v in value)}")
        else:
            print(f"{key:<40}{value!s:>14}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
