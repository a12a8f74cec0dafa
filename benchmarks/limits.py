"""Each hot path against this machine's matmul limit: how far from the floor is it?

A speed-up is only worth chasing where a path is far from what the hardware allows. For every hot path this
counts its matmul FLOPs analytically, times exactly those matmuls alone (same shapes, preallocated operands,
``out=``: the limit, i.e. the path's FLOPs at this machine's matmul rate *at those shapes*), and times the path
as the project runs it; measured / limit says how much room the non-matmul work (elementwise ops, autograd,
Adam, Python) leaves. HalfCheetah sizes (obs 17, act 6) throughout.

FLOPs: 2*m*k*n per [m, k] x [k, n] product. Backward of a layer y = x W: the weight gradient x^T g
([in, rows] x [rows, out]) always, the input gradient g W^T ([rows, out] x [out, in]) only where autograd
needs it (not for the first layer of a network fed by data; yes for the critic's first layer in the actor loss,
whose input holds the action). Elementwise ops, biases and Adam are not counted (they are the overhead).

- ``sac``: one ``SACModule.update`` (batch 256, 2 x 256 actor, twin 2 x 256 critics): target (actor forward on
  s', target-critic forward), critic forward + backward, actor forward + backward through the critics (input
  gradients only), alpha (no matmul). Timed on a mixed batch as the loop draws it.
- ``stage1``: one stage-1 step, 7 members x 256 rows, 4 x 200 swish, output 2 x 18 (``threads.py``'s step).
- ``rollout``: one step of 50,000 start states (``ModelRollouts.rollout`` with h = 1: the policy's ``act`` and
  the 7-member ``predict``, each in chunks of 1024, penalty, termination, buffer); an h-step rollout is ~h times
  this.
- ``eval_act``: one evaluation step's policy call (batch 1, deterministic); the MuJoCo step is printed beside
  it (``mujoco_step``), not a matmul, so it has no limit.

Times are the best of ``--rounds`` rounds (each the mean of several calls), paths and their matmul limits
interleaved, so both see the same background load. Prints machine, torch, threads and load average before and
after; writes ``benchmarks/results/limits.json``.

Measured (AMD EPYC, 2 cores shared with another job, 1 thread, torch 2.13.0+cpu, 5 rounds, best of rounds),
before (SAC code of 9538353) and after (69a629f) the SAC work of issue 20, run back to back (the old package first
on PYTHONPATH; the printed ``code`` names the package that ran)::

    before, load average 1.83 -> 1.95         after, load average 1.95 -> 1.97
    path       MFLOP  limit ms  measured  ratio       limit ms  measured  ratio
    sac       581.57     6.881     9.490   1.38          7.547     8.906   1.18
    stage1   1400.63    17.973    20.305   1.13         18.542    21.110   1.14
    rollout 99556.00  1121.727  1450.694   1.29       1172.246  1460.134   1.25
    eval_act    0.15     0.009     0.080   9.14          0.009     0.072   8.16
    mujoco_step (ms)                0.041                          0.042

An earlier pair read sac 1.38 -> 1.25 (load 2.3-2.4). Limits move by 10% between runs of the same code: compare
ratios within one run. The batch-1 policy call was Python and dispatch overhead (~70 us against 9 us of matmul),
twice the MuJoCo step; ``SACModule.act(deterministic=True)`` now skips the log-std and log-density it threw away.

The round's end state on the same machine, nearly idle (load 0.4-0.9, nothing else running), 9538353 against main
alternated three times (``--paths sac stage1 --rounds 7``), then the whole table once for each::

    ratio      9538353 (three runs)   main (three runs)
    sac        1.31, 1.33, 1.35       1.26, 1.19, 1.25
    stage1     1.22, 1.20, 1.17       1.19, 1.17, 1.21    (the same code: stage 1 was left unchanged)
    rollout    1.26                   1.20-1.23
    eval_act   9.25                   3.89-4.21           (82 -> 37 us per call; MuJoCo step 41 us)

    python benchmarks/limits.py [--threads 1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from argparse import Namespace
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

Mm = tuple[int, int, int, int, int, bool, bool]
"""(count, batch, m, k, n, ta, tb): ``count`` products [batch, m, k] x [batch, k, n], an operand stored transposed
where ``ta`` / ``tb`` (as autograd and ``nn.Linear`` hand it to BLAS: the layout changes the kernel's speed)."""

OBS, ACT, HID, B = 17, 6, 256, 256
ACTOR, CRITIC = [OBS, HID, HID, 2 * ACT], [OBS + ACT, HID, HID, 1]
MODEL = [OBS + ACT, 200, 200, 200, 200, 2 * (1 + OBS)]
MEMBERS, ROWS, CHUNK = 7, 50_000, 1024


def mlp_mms(rows: int, dims: list[int], members: int = 0, backward: bool = False, weight_grad: bool = True,
            first_input_grad: bool = False) -> list[Mm]:
    """The matmuls of an MLP ``dims`` on ``rows`` rows: ``nn.Linear`` layers (weight [out, in]) when ``members``
    is 0, else ``members`` stacked ``baddbmm`` layers (weights [E, in, out]). Forward, and with ``backward``
    the weight gradients (if ``weight_grad``) and input gradients (the first layer's only if asked)."""
    layers, b, lin = list(itertools.pairwise(dims)), max(members, 1), members == 0
    mms = [(1, b, rows, i, o, False, lin) for i, o in layers]  # x W^T (Linear) or x W (ensemble)
    if backward:
        if weight_grad:  # g^T x -> [out, in] (Linear) or x^T g -> [E, in, out]
            mms += [(1, b, o, rows, i, True, False) if lin else (1, b, i, rows, o, True, False) for i, o in layers]
        mms += [(1, b, rows, o, i, False, not lin) for n, (i, o) in enumerate(layers) if n > 0 or first_input_grad]
    return mms


def path_mms() -> dict[str, list[Mm]]:
    """Every counted matmul of each path (module docstring)."""
    target = mlp_mms(B, ACTOR) + mlp_mms(B, CRITIC, 2)
    critic = mlp_mms(B, CRITIC, 2, backward=True)
    actor = mlp_mms(B, ACTOR, backward=True) + mlp_mms(B, CRITIC, 2, backward=True, weight_grad=False,
                                                      first_input_grad=True)
    full, rest = divmod(ROWS, CHUNK)  # the policy's and predict's chunks: 48 of 1024 rows, then 848
    rollout = [(full, *mm[1:]) for dims, members in ((ACTOR, 0), (MODEL, MEMBERS))
               for mm in mlp_mms(CHUNK, dims, members)] + mlp_mms(rest, ACTOR) + mlp_mms(rest, MODEL, MEMBERS)
    return {"sac": target + critic + actor, "stage1": mlp_mms(B, MODEL, MEMBERS, backward=True),
            "rollout": rollout, "eval_act": mlp_mms(1, ACTOR)}


def flops(mms: list[Mm]) -> float:
    return float(sum(2 * c * b * m * k * n for c, b, m, k, n, _, _ in mms))


def _bmm(x: Tensor, w: Tensor, out: Tensor) -> None:
    torch.bmm(x, w, out=out)


def _mm_loop(x: Tensor, w: Tensor, out: Tensor) -> None:
    for i in range(x.shape[0]):
        torch.mm(x[i], w[i], out=out[i])


def _mm(x: Tensor, w: Tensor, out: Tensor) -> None:
    torch.mm(x, w, out=out)


def _seconds(fn: Callable[..., None], *args: Tensor, reps: int = 20) -> float:
    fn(*args)
    start = time.perf_counter()
    for _ in range(reps):
        fn(*args)
    return time.perf_counter() - start


def matmul_runner(mms: list[Mm]) -> Callable[[], None]:
    """Runs exactly ``mms`` on preallocated operands (``out=``): the path's matmuls and nothing else. A stacked
    product runs as one ``bmm`` or as one ``mm`` per member, whichever is faster here: the machine's rate at that
    shape, not one kernel's (torch 2.13's CPU ``bmm`` takes ~8x longer than two ``mm`` where n or k is 1)."""
    ops = []
    for count, b, m, k, n, ta, tb in mms:
        x = torch.randn(b, k, m).mT if ta else torch.randn(b, m, k)
        w = torch.randn(b, n, k).mT if tb else torch.randn(b, k, n)
        out = torch.empty(b, m, n)
        if b == 1:
            ops.append((_mm, x[0], w[0], out[0], count))
        else:
            fast = _bmm if _seconds(_bmm, x, w, out) < _seconds(_mm_loop, x, w, out) else _mm_loop
            ops.append((fast, x, w, out, count))

    def run() -> None:
        for fn, x, w, out, count in ops:
            for _ in range(count):
                fn(x, w, out)

    return run


def project_paths() -> dict[str, Callable[[], object]]:
    """Each path as the project runs it (``threads.py``'s phases; the evaluation's policy call at batch 1)."""
    from threads import phases

    fns = phases(Namespace(rows=ROWS, episodes=1, episode_steps=1))
    from mopo_lightning.policy.sac import SACModule

    policy = SACModule(OBS, ACT)
    obs1 = torch.randn(1, OBS)
    return {"sac": fns["sac"], "stage1": fns["dynamics"], "rollout": fns["rollout"],
            "eval_act": lambda: policy.act(obs1, deterministic=True)}


def mujoco_step() -> Callable[[], object]:
    from mopo_lightning.envs.wrappers import make_env

    env = make_env("halfcheetah")
    env.reset(seed=0)
    action = env.action_space.sample() * 0

    def step() -> object:
        return env.step(action)

    return step


CALLS = {"sac": 20, "stage1": 20, "rollout": 1, "eval_act": 2000, "mujoco_step": 2000}


def best_of(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--paths", nargs="+", default=["sac", "stage1", "rollout", "eval_act"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "limits.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    import mopo_lightning

    machine = {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "threads": torch.get_num_threads(),
               "code": str(Path(mopo_lightning.__file__).parent)}
    print(" | ".join(f"{k} {v}" for k, v in machine.items()) + f" | load before {load_before}")
    mms = path_mms()
    paths = project_paths()
    fns: dict[str, tuple[Callable[[], object], int]] = {}
    for name in args.paths:
        fns[name] = (paths[name], CALLS[name])
        fns[name + ":limit"] = (matmul_runner(mms[name]), CALLS[name])
    if "eval_act" in args.paths:
        fns["mujoco_step"] = (mujoco_step(), CALLS["mujoco_step"])
    for fn, calls in fns.values():  # warm-up
        best_of(fn, max(1, calls // 4))
    best = {k: float("inf") for k in fns}
    for _ in range(args.rounds):
        for key, (fn, calls) in fns.items():
            best[key] = min(best[key], best_of(fn, calls))
    load_after = os.getloadavg()
    rows = {}
    for name in args.paths:
        f, limit, measured = flops(mms[name]), best[name + ":limit"], best[name]
        rows[name] = {"gflop": f / 1e9, "matmul_gflop_per_s": f / limit / 1e9, "limit_ms": 1e3 * limit,
                      "measured_ms": 1e3 * measured, "ratio": measured / limit}
    print(f"{'path':<12}{'MFLOP':>10}{'GFLOP/s':>10}{'limit ms':>11}{'measured ms':>13}{'ratio':>8}")
    for name, r in rows.items():
        print(f"{name:<12}{r['gflop'] * 1e3:>10.2f}{r['matmul_gflop_per_s']:>10.1f}{r['limit_ms']:>11.3f}"
              f"{r['measured_ms']:>13.3f}{r['ratio']:>8.2f}")
    if "mujoco_step" in best:
        print(f"{'mujoco_step':<12}{'-':>10}{'-':>10}{'-':>11}{1e3 * best['mujoco_step']:>13.3f}{'-':>8}")
    print(f"load after {load_after}")
    result = {**machine, "loadavg_before": load_before, "loadavg_after": load_after, "rounds": args.rounds,
              "statistic": "best of rounds", "paths": rows,
              "mujoco_step_ms": 1e3 * best["mujoco_step"] if "mujoco_step" in best else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
