"""Estimates already made, kept on disk: an interrupted ``select`` resumes where it stopped, and a sweep that
gained runs is selected again by estimating only its new candidates.

One JSON line per estimate, appended and flushed as each is made (a line cut by a crash is skipped on reading).
The key is everything the estimate depends on: the policy checkpoint and the run's own model (path, size and
modification time), the evaluation model's fingerprint and seed, and the estimators' config; anything else
changed, the key changes and the estimate is made again. No online score is stored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_identity(path: Path) -> list[Any]:
    """A file as its resolved path, size and modification time (a rewritten checkpoint is another file)."""
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


class EstimateStore:
    """Estimates by key in a JSON-lines file (module docstring); ``path`` None keeps nothing."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = None if path is None else Path(path)
        self.known: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.known[entry["key"]] = entry
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a crash

    @staticmethod
    def key(policy: Path, own_model: Path, evaluation: dict[str, Any] | None, config: dict[str, Any]) -> str:
        """The estimate's identity (module docstring)."""
        text = json.dumps([file_identity(policy), file_identity(own_model), evaluation, config], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, key: str) -> tuple[dict[str, float], dict[str, Any]] | None:
        entry = self.known.get(key)
        return None if entry is None else (entry["estimates"], entry["details"])

    def put(self, key: str, estimates: dict[str, float], details: dict[str, Any]) -> None:
        entry = {"key": key, "estimates": estimates, "details": details}
        self.known[key] = entry
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(entry) + "\n")
                f.flush()

    def __len__(self) -> int:
        return len(self.known)
