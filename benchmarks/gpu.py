"""GPU figures: SAC updates/s (eager, compiled, compiled + CUDA graphs), model-rollout and epoch-like seconds.

- SAC: ``SACModule`` with MOPO's networks (2 x 256, batch 256, obs 17, act 6), ``update`` called in a loop
  on batches already on the device; one ``synchronize`` around the timed loop, none inside (the update
  has no per-update host sync; its finite check reads the device once every 1000 updates). Variants:
  ``eager``, ``compiled`` (``compile=True``: the three loss terms, fullgraph, default mode) and
  ``compiled_cudagraphs`` (``compile_losses(mode="reduce-overhead")``). Also counts host syncs in the
  timed loop of the eager variant (``torch.cuda.set_sync_debug_mode("warn")``).
- Rollout: 50,000 start states, h = 5, through ``model_env.env.model_step`` with an untrained
  ``GaussianEnsemble`` (7 x 4 x 200; its cost does not depend on its weights) and the SAC actor.
- Epoch-like: one such rollout, then 1000 SAC updates on batches drawn (device-side indices) from the
  rollout's transitions; MuJoCo evaluation (CPU-bound, ``benchmarks/epoch.py``) is left out.

Without CUDA it prints that it skipped and exits 0 (``make bench`` runs every benchmark); ``--device cpu``
times the SAC variants on CPU as a smoke test (no CUDA graphs, no rollout). Prints each figure as it is
measured and rewrites ``--out`` (default ``benchmarks/results/gpu.json``) after each, so a run cut short
keeps what it finished; a variant that fails (e.g. no compiler for inductor) is recorded under ``errors``
and the others still run (exit status 1 then). The epoch-like figures reuse each variant's module, so
nothing is compiled twice. ``scripts/gpu_check.sh`` runs it on the CUDA machine.
Usage: ``python benchmarks/gpu.py [--updates 1000] [--warmup 50] [--device cuda] [--variants eager,compiled]``
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch
from tensordict import TensorDict

from mopo_lightning.dynamics.ensemble import GaussianEnsemble
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.model_env.env import model_step
from mopo_lightning.model_env.mdp import ModelMDP
from mopo_lightning.policy.sac import SACModule
from mopo_lightning.transitions import transitions

OBS, ACT, BATCH = 17, 6, 256


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batches(device: torch.device, n: int = 16) -> list[TensorDict]:
    return [
        transitions(torch.randn(BATCH, OBS), torch.rand(BATCH, ACT) * 2 - 1, torch.randn(BATCH, OBS),
                    torch.randn(BATCH, 1), torch.rand(BATCH, 1) < 0.05).to(device)
        for _ in range(n)
    ]


def make_sac(variant: str, device: torch.device) -> SACModule:
    sac = SACModule(OBS, ACT, compile=variant == "compiled").to(device)
    if variant == "compiled_cudagraphs":
        sac.compile_losses(mode="reduce-overhead")
    return sac


def time_updates(sac: SACModule, sample, updates: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Warm-up (compilation included, reported apart), then ``updates`` timed updates."""
    start = time.perf_counter()
    for i in range(warmup):
        sac.update(sample(i))
    sync(device)
    warmup_s = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(updates):
        sac.update(sample(i))
    sync(device)
    seconds = time.perf_counter() - start
    return {"updates_per_s": updates / seconds, "warmup_s": warmup_s}


def count_syncs(sac: SACModule, batches: list[TensorDict], updates: int) -> int:
    """Host syncs CUDA reports in ``updates`` updates (the finite check adds one per 1000)."""
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(updates):
                sac.update(batches[i % len(batches)])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def draw(data: TensorDict) -> TensorDict:
    """A uniform batch of rows, indices drawn on the data's device (no host round trip)."""
    return data[torch.randint(data.shape[0], (BATCH,), device=data["observation"].device)]


@torch.no_grad()
def rollout(sac: SACModule, ensemble: GaussianEnsemble, start: torch.Tensor, rollout_length: int,
            generator: torch.Generator) -> TensorDict:
    """h penalised model steps from every start state, the actor sampling; returns all transitions."""
    mdp, obs, steps = ModelMDP(get_task("halfcheetah").termination_fn, 1.0, rollout_length=rollout_length), start, []
    for _ in range(rollout_length):
        action = sac.act(obs)
        nxt = model_step(ensemble, obs, action, mdp, generator)
        steps.append(transitions(obs, action, nxt["observation"], nxt["reward"], nxt["terminated"]))
        obs = nxt["observation"]
    return torch.cat(steps)


def save(result: dict, out: Path) -> None:
    """Write what is measured so far: a run stopped by a time limit still leaves its finished sections."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1000, help="timed SAC updates per variant")
    parser.add_argument("--warmup", type=int, default=50, help="untimed updates first (compilation included)")
    parser.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test of the SAC part")
    parser.add_argument("--variants", default="eager,compiled,compiled_cudagraphs",
                        help="comma-separated SAC variants (compiled_cudagraphs runs on CUDA only)")
    parser.add_argument("--rollout-batch-size", type=int, default=50_000)
    parser.add_argument("--rollout_length", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device, skipped (--device cpu smoke-tests the SAC part)")
        return
    if device.type == "cpu":
        torch.set_num_threads(1)
    torch.manual_seed(0)
    variants = [v for v in args.variants.split(",")
                if v and (v != "compiled_cudagraphs" or device.type == "cuda")]
    result: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "torch": torch.__version__, "batch_size": BATCH, "hidden": 256, "sac": {}, "errors": {}}
    print(f"SAC update on {result['device']} (torch {torch.__version__}), batch {BATCH}, 2x256 MLPs, "
          "fp32 (TF32 off, the default)")
    print(f"{'variant':<22}{'updates/s':>12}{'warm-up s':>12}")

    # Each variant's module is kept for the epoch-like figures, so a compiled one is not compiled twice.
    batches, modules = random_batches(device), {}
    for variant in variants:
        try:
            sac = make_sac(variant, device)
            row = time_updates(sac, lambda i: batches[i % len(batches)], args.updates, args.warmup, device)
            if variant == "eager" and device.type == "cuda":
                row["host_syncs_per_1000"] = count_syncs(sac, batches, 1000)
        except Exception as error:  # one failing (no compiler, ...) leaves the others
            result["errors"][f"sac/{variant}"] = f"{type(error).__name__}: {error}"[:2000]
            print(f"{variant:<22}failed: {type(error).__name__}: {str(error)[:300]}")
            continue
        modules[variant] = sac
        result["sac"][variant] = row
        syncs = row.get("host_syncs_per_1000")
        print(f"{variant:<22}{row['updates_per_s']:>12.1f}{row['warmup_s']:>12.1f}"
              + ("" if syncs is None else f"   host syncs in 1000 updates: {syncs}"))
        save(result, args.out)

    if device.type == "cuda":
        ensemble = GaussianEnsemble(OBS, ACT).to(device)
        start = torch.randn(args.rollout_batch_size, OBS, device=device)
        generator = torch.Generator(device=device).manual_seed(0)
        actor = modules.get("eager") or make_sac("eager", device)
        rollout(actor, ensemble, start[:1000], args.rollout_length, generator)  # warm-up (kernels, allocator)
        sync(device)
        t0 = time.perf_counter()
        data = rollout(actor, ensemble, start, args.rollout_length, generator)
        sync(device)
        result["rollout_s"] = time.perf_counter() - t0
        result["rollout_transitions"] = data.shape[0]
        print(f"model rollout: {args.rollout_batch_size} x h={args.rollout_length} "
              f"({result['rollout_transitions']} transitions): {result['rollout_s']:.3f} s")
        save(result, args.out)
        result["epoch_like_s"] = {}
        for variant, sac in modules.items():
            try:
                time_updates(sac, lambda i: draw(data), 1, 5, device)  # the draw's kernels; no recompilation
                t0 = time.perf_counter()
                epoch_data = rollout(sac, ensemble, start, args.rollout_length, generator)
                for _ in range(1000):
                    sac.update(draw(epoch_data))
                sync(device)
            except Exception as error:  # recorded; the other variants still run
                result["errors"][f"epoch_like/{variant}"] = f"{type(error).__name__}: {error}"[:2000]
                print(f"epoch-like, {variant}: failed: {type(error).__name__}: {str(error)[:300]}")
                continue
            result["epoch_like_s"][variant] = time.perf_counter() - t0
            seconds = result["epoch_like_s"][variant]
            print(f"epoch-like (rollout + 1000 updates), {variant:<20}{seconds:>8.2f} s")
            save(result, args.out)
    else:
        print("model rollout and epoch-like figures: skipped (CPU)")
    save(result, args.out)
    print(f"wrote {args.out}")
    if result["errors"]:
        failed = sorted(result["errors"])
        raise SystemExit(f"benchmarks/gpu.py: {len(failed)} part(s) failed: {failed}")


if __name__ == "__main__":
    main()
