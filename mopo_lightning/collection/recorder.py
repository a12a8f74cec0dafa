"""InfoRecorder: row buffers for the per-step OOD quantities a collection records (``infos/*``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mopo_lightning.envs.rewards import CONTACT_KEY


class InfoRecorder:
    """Row buffers of ``info["relabel"]`` for a collection of ``steps`` transitions.

    Buffers are allocated from the first record (the contact-force width depends on the robot).
    Velocities and heights are float64; contact forces float32 (84 per Ant row), as recorded.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.buffers: dict[str, np.ndarray] = {}

    def record(self, i: int, relabel: Mapping[str, Any]) -> None:
        if not self.buffers:
            for name, value in relabel.items():
                value = np.asarray(value)
                dtype = np.float32 if name == CONTACT_KEY else np.float64
                self.buffers[name] = np.zeros((self.steps, *value.shape), dtype)
        for name, value in relabel.items():
            self.buffers[name][i] = value

    def arrays(self, rows: int | None = None) -> dict[str, np.ndarray]:
        """``infos/<name>`` arrays of the first ``rows`` rows (all by default)."""
        return {f"infos/{name}": buf[:rows] for name, buf in self.buffers.items()}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Refill the first rows from ``arrays()`` output (resuming a collection)."""
        for key, value in arrays.items():
            name = key.removeprefix("infos/")
            value = np.asarray(value)
            if name not in self.buffers:
                self.buffers[name] = np.zeros((self.steps, *value.shape[1:]), value.dtype)
            self.buffers[name][: value.shape[0]] = value
