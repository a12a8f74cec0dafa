"""MOPO's Table 1 layout (Yu et al. 2020, arXiv 2005.13239): one row per dataset kind x environment x dataset,
each method's statistics side by side, and the paper's MOPO number where it applies.

- A row is one dataset (``analysis/cells.py``: its bytes): v0 and v2 of one D4RL dataset, or a D4RL name
  beside a file of the same kind, are two rows with their data named, never one cell.
- The paper's number stands beside D4RL-named data only; it was measured on D4RL v0 (``paper_data``), so a
  row of another version carries it marked. A file of our own or a Minari dataset gets none.
- Minari runs (``score_reference`` ``minari:<id>``) enter in the same layout, on their own env (``hopper-v5``)
  and normalised by their own reference, which the row names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mopo_lightning.analysis.cells import D4RL_ROWS, Dataset

PAPER_MOPO = {("random", "halfcheetah"): 35.4, ("random", "hopper"): 11.7, ("random", "walker2d"): 13.6,
              ("medium", "halfcheetah"): 42.3, ("medium", "hopper"): 28.0, ("medium", "walker2d"): 17.8,
              ("mixed", "halfcheetah"): 53.1, ("mixed", "hopper"): 67.5, ("mixed", "walker2d"): 39.0,
              ("medium-expert", "halfcheetah"): 63.3, ("medium-expert", "hopper"): 23.7,
              ("medium-expert", "walker2d"): 44.6}
"""MOPO's Table 1 (D4RL v0, mean of 6 seeds), beside D4RL-named datasets for reference."""
PAPER_DATA = "v0"
"""The D4RL version the paper's numbers were measured on."""


def paper_mopo(data: Dataset, env: str) -> float | None:
    """The paper's MOPO score for a D4RL-named dataset of its kind and env; None for files and Minari data."""
    return PAPER_MOPO.get((data.kind, env)) if data.source == "d4rl" else None


def table1(rows: list[dict[str, Any]], data: Mapping[str, Dataset]) -> list[dict[str, Any]]:
    """Table 1 rows from the configuration rows that have normalised scores; ``ValueError`` where two of them
    would fill one cell (cannot happen while configurations are keyed as ``Run.config``)."""
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    references: dict[tuple[str, str, str], set[str]] = {}
    for row in rows:
        if row["measure"] != "normalized_score":
            continue
        key = (data[row["data_key"]].kind, row["task"], row["data_key"])
        methods = cells.setdefault(key, {})
        if row["method"] in methods:
            raise ValueError(f"Table 1: two configurations fill the cell {row['configuration']!r}")
        methods[row["method"]] = row["statistics"]
        references.setdefault(key, set()).update(row["score_reference"])
    order = {k: i for i, k in enumerate(D4RL_ROWS.values())}
    out = []
    for (kind, env, key), methods in sorted(cells.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][0],
                                                                            kv[0][1], data[kv[0][2]].label)):
        d, paper = data[key], paper_mopo(data[key], env)
        out.append({"dataset": kind, "env": env, "data": d.label, "data_version": d.version,
                    "reference": sorted(references[kind, env, key]), "methods": methods, "paper_mopo": paper,
                    "paper_data": None if paper is None else f"D4RL {PAPER_DATA}"})
    return out
