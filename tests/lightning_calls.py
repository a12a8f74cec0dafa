"""Counting Lightning's public wrappers of manual optimisation, for the tests that pin their use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.core.optimizer import LightningOptimizer


def _counting(original: Callable, calls: dict[str, int], name: str) -> Callable:
    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return original(self, *args, **kwargs)

    return counted


def count_lightning_wrappers(monkeypatch) -> dict[str, int]:
    """Count the calls of ``LightningModule.manual_backward`` and ``LightningOptimizer.step`` (each still runs)."""
    calls = {"manual_backward": 0, "step": 0}
    for owner, name in ((L.LightningModule, "manual_backward"), (LightningOptimizer, "step")):
        monkeypatch.setattr(owner, name, _counting(getattr(owner, name), calls, name))
    return calls
