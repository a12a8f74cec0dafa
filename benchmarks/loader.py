"""D4RL loader speed: read + validate a 1,000,000-row Hopper file in both modes (target < 5 s), 1 thread.

The file is collected once with the real Hopper-v4 env and a random policy (about 2 minutes) and cached
as ``benchmarks/results/hopper-random-1000000-s0.hdf5`` (git-ignored). Each mode is timed as the
median of 3 cold ``load_dataset`` calls (the OS page cache stays warm, as after a first run).
The step-999 rule (files without ``timeouts``) is timed too, on ``infer_timeouts`` alone.

Prints a table and writes ``benchmarks/results/loader.json``.
Usage: ``python benchmarks/loader.py [--steps 1000000] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import h5py
import torch

from mopo_lightning.collection.collect import collect
from mopo_lightning.data.d4rl import infer_timeouts, load_dataset

torch.set_num_threads(1)

RESULTS = Path(__file__).parent / "results"
TARGET_S = 5.0


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    path = RESULTS / f"hopper-random-{args.steps}-s0.hdf5"
    collect_s = None
    if not path.exists():
        start = time.perf_counter()
        collect("hopper", steps=args.steps, path=path, policy="random", seed=0)
        collect_s = time.perf_counter() - start

    rows = []
    for mode in ("transitions", "qlearning"):
        seconds, td = timed(lambda mode=mode: load_dataset(path, "hopper", mode=mode), args.repeats)
        rows.append(
            {"case": f"load_dataset mode={mode}", "seconds": seconds, "rows_out": int(td.batch_size[0])}
        )
    with h5py.File(path, "r") as f:
        terminals = f["terminals"][()]
    seconds, final = timed(lambda: infer_timeouts(terminals), args.repeats)
    rows.append(
        {"case": "infer_timeouts (no timeouts key)", "seconds": seconds, "rows_out": int((~final).sum())}
    )

    result = {
        "file": str(path),
        "rows": args.steps,
        "terminals": int(terminals.sum()),
        "file_mb": round(path.stat().st_size / 2**20, 1),
        "collect_seconds": collect_s,
        "repeats": args.repeats,
        "target_seconds": TARGET_S,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "results": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "loader.json").write_text(json.dumps(result, indent=2))

    print(
        f"{args.steps:,} Hopper rows, {result['terminals']:,} terminals, {result['file_mb']} MB"
        + (f", collected in {collect_s:.0f} s" if collect_s else " (cached file)")
    )
    print(f"{'case':36s} {'median s':>9s} {'rows out':>10s}  target < {TARGET_S:.0f} s")
    for row in rows:
        flag = "ok" if row["seconds"] < TARGET_S else "SLOW"
        print(f"{row['case']:36s} {row['seconds']:9.3f} {row['rows_out']:10,d}  {flag}")
    print(f"wrote {RESULTS / 'loader.json'}")


if __name__ == "__main__":
    main()
