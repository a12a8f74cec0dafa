"""Honest failure: stop on non-finite numbers, naming the step and the quantity.

A NaN in a loss or a model prediction silently poisons everything after it (the critics learn it, the
model buffer spreads it), so the run stops at once. The exception propagates through Lightning, which
saves nothing on an exception: the last good checkpoint is kept untouched. A saved record (``run.json``,
a model's fingerprint, a collection checkpoint) that differs from the current one refuses in one shape, and a
name that no registry knows (a task, a penalty kind, a dataset) in another (``unknown_name``).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor


class NonFiniteError(RuntimeError):
    """A loss or a model prediction became NaN or infinite."""


class ConfigError(ValueError):
    """A configuration that cannot work, caught before any work is done."""


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or of another run; the message names the file."""


class UnknownName(ConfigError, KeyError):
    """A name no registry knows: a ``ConfigError`` (one line, exit 2) that callers of a dict-like lookup may
    still catch as the ``KeyError`` it used to be. ``str()`` is the message itself (``KeyError`` quotes it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def closest(name: str, known: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The one of ``known`` closest to ``name`` (``difflib``, ignoring case), or None when none is close."""
    by_lower = {str(k).lower(): str(k) for k in known}
    close = difflib.get_close_matches(str(name).strip().lower(), list(by_lower), n=1, cutoff=cutoff)
    return by_lower[close[0]] if close else None


def did_you_mean(name: str, known: Iterable[str], cutoff: float = 0.6) -> str:
    """`` (did you mean X?)`` for the ``closest`` of ``known``, or ``""`` for none."""
    close = closest(name, known, cutoff)
    return f" (did you mean {close}?)" if close else ""


def unknown_name(what: str, name: str, known: Iterable[str]) -> UnknownName:
    """``UnknownName("unknown {what} 'name' (did you mean X?); known: a, b, ...")``, for the caller to raise."""
    known = sorted({str(k) for k in known})
    return UnknownName(f"unknown {what} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}")


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
