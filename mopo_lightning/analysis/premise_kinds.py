"""Which penalty kind tracked the model's error best where the policy went: the report's calibration table.

The premise monitor (``diagnostics/premise.py``) measures every penalty kind at every evaluation, whichever kind
trains, as Lu et al. (2022, arXiv 2110.04135) compare them: the Spearman rank correlation of u(s, a) with the
true one-step model error on the evaluation episodes' transitions, i.e. on the policy's own states. Per
configuration this takes each run's final evaluation (``final_premise``), averages each kind's Spearman over
the runs, and names the kind with the highest mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mopo_lightning.model_env.penalties import PENALTY_KINDS

SUFFIX = "/spearman"


def premise_kinds(premises: Mapping[str, Sequence[Mapping[str, Any] | None]]) -> list[dict[str, Any]]:
    """{configuration: its runs' ``final_premise`` records} -> one row per configuration that has any:
    ``configuration``, ``trained`` (the kind that trained), ``runs``, ``spearman`` ({kind: mean over the runs
    that have it}) and ``best`` (the kind of the highest mean; ties: registry order)."""
    rows = []
    for config, records in premises.items():
        records = [r for r in records if r]
        found = {k[: -len(SUFFIX)] for r in records for k in r if k.endswith(SUFFIX)}
        kinds = [k for k in PENALTY_KINDS if k in found] + sorted(found - set(PENALTY_KINDS))
        means = {}
        for kind in kinds:
            values = [v for r in records if isinstance(v := r.get(kind + SUFFIX), (int, float)) and math.isfinite(v)]
            if values:
                means[kind] = sum(values) / len(values)
        if means:
            rows.append({"configuration": config, "trained": records[0].get("penalty_kind"), "runs": len(records),
                         "spearman": means, "best": max(means, key=means.__getitem__)})
    return rows
