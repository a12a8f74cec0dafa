"""Honest failure: stop on non-finite numbers, naming the step and the quantity.

A NaN in a loss or a model prediction silently poisons everything after it (the critics learn it, the
model buffer spreads it), so the run stops at once. The exception propagates through Lightning, which
saves nothing on an exception: the last good checkpoint is kept untouched.
"""

from __future__ import annotations

from typing import Mapping

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
