"""Wall time of ``mopo-lightning select`` on a sweep's runs, the issue's speed goal (12 runs in 5 minutes on 2 cores).

Runs the command's own function (``selection.selector.select_runs``) on the given run directories, the evaluation
model served by the dynamics cache (run it once before timing, or pass runs whose cache holds it), and prints the
CPU (``lscpu``'s Model name), the torch threads, the load before and after (``os.getloadavg``), the wall time in
all and per candidate, and whether the evaluation model was loaded or trained. Default runs: the 12 trials of the
README's h x lambda grid (h {1, 5} x lambda {1, 5} x 3 seeds) inside the selection study's sweep.

    python benchmarks/select_sweep.py [RUN_DIR ...] [--candidates final] [--fqe_updates 0]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as the CLI sets it

import torch
from selection_model_value import cpu_name

from mopo_lightning.selection.estimators import EstimatorConfig, with_updates
from mopo_lightning.selection.selector import SelectConfig, select_runs

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "checkpoints" / "sweeps" / "selection_study"
DEFAULT = [SWEEP / f"hopper_mixed-h{h}-lam{lam}-s{s}" for h in (1, 5) for lam in (1, 5) for s in (0, 1, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", default=[str(p) for p in DEFAULT])
    parser.add_argument("--candidates", default="final", choices=["final", "epochs"])
    parser.add_argument("--fqe_updates", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    config = SelectConfig(estimators=with_updates(EstimatorConfig(), args.fqe_updates), candidates=args.candidates)
    start = time.perf_counter()
    selection = select_runs(args.runs, config, quiet=False)
    seconds = time.perf_counter() - start
    rows = selection["candidates"]
    figures = {
        "cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "load_before": load_before,
        "load_after": os.getloadavg(), "runs": len(args.runs), "candidates": len(rows),
        "failed": sum("error" in r for r in rows), "seconds": round(seconds, 1),
        "seconds_per_candidate": round(seconds / max(len(rows), 1), 2), "fqe_updates": args.fqe_updates,
        "evaluation_models": {g: m.get("loaded", m.get("error")) for g, m in selection["evaluation_models"].items()},
    }
    print(json.dumps(figures, indent=1))
    out = ROOT / "benchmarks" / "results" / "select_sweep.json"
    out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
