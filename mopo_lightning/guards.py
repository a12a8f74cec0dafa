"""Honest failure: stop on non-finite numbers, naming the step and the quantity.

A NaN in a loss or a model prediction silently poisons everything after it (the critics learn it, the
model buffer spreads it), so the run stops at once. The exception propagates through Lightning, which
saves nothing on an exception: the last good checkpoint is kept untouched. A saved record (``run.json``,
a model's fingerprint, a collection checkpoint) that differs from the current one refuses in one shape.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


class NonFiniteError(RuntimeError):
    """A loss or a model prediction became NaN or infinite."""


class ConfigError(ValueError):
    """A configuration that cannot work, caught before any work is done."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or of another run; the message names the file."""


def assert_finite(values: Mapping[str, Tensor], where: str) -> None:
    """Raise ``NonFiniteError`` naming the first non-finite entry of ``values`` and ``where`` it happened."""
    flags = torch.stack([torch.isfinite(v).all() for v in values.values()])
    if bool(flags.all()):
        return
    name = list(values)[int((~flags).nonzero()[0])]
    # Only the fact: the caller that knows which checkpoint is left (``fit``) says so.
    raise NonFiniteError(f"non-finite {name} {where}")


def require_same(stored: Mapping[str, Any], current: Mapping[str, Any], error: type[Exception], subject: str,
                 advice: str, most: int = 4) -> None:
    """Raise ``error("{subject}: key (stored -> current), ...; {advice}")`` unless the records are equal.

    One line naming the first ``most`` differing keys (sorted), so the user sees what to put back.
    """
    missing = object()

    def show(value: Any) -> str:
        if value is missing:
            return "(absent)"
        is_sha256 = isinstance(value, str) and re.fullmatch("[0-9a-f]{64}", value)
        return value[:12] if is_sha256 else json.dumps(value, default=str)

    keys = sorted(k for k in set(stored) | set(current) if stored.get(k, missing) != current.get(k, missing))
    if not keys:
        return
    shown = ", ".join(f"{k} ({show(stored.get(k, missing))} -> {show(current.get(k, missing))})" for k in keys[:most])
    more = f" and {len(keys) - most} more" if len(keys) > most else ""
    raise error(f"{subject}: {shown}{more}; {advice}")
