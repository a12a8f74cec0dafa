"""Where a run's numbers came from: this package's version and commit, the libraries, the device.

Every run records it in ``results.json`` under ``provenance`` (``recipe.run_results``); ``report`` reads this
layout, so keep it::

    {"package": {"name": "mopo-lightning", "version": "0.1.0", "commit": "<40 hex> or null",
                 "dirty": true | false | null, "source": "git" | "metadata"},
     "libraries": {"python": "3.11.9", "torch": "2.5.1", ..., "rliable": null},   # null: not installed
     "device": {"accelerator": "cpu" | "cuda" | ..., "name": "<CPU model or GPU name>",
                "threads": {"dynamics": 1, "rollout": 1, "sac": 1}, "cpus": 2}}

``commit`` and ``dirty`` come from git (``rev-parse HEAD``, ``status --porcelain``) when the package's own
source is a file tracked in a git work tree (a clone, an editable install); otherwise from the installed
package's metadata (a wheel: the commit of its ``direct_url.json`` ``vcs_info`` if pip recorded one, else null;
dirty null). Package and libraries are read once per process; git gets a few seconds, then null.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from mopo_lightning.machine import available_cpus

PACKAGE = "mopo-lightning"
LIBRARIES = ("torch", "lightning", "torchrl", "tensordict", "gymnasium", "mujoco", "numpy", "ray", "rliable")
"""Distributions whose versions change a run's numbers or its records (read from metadata: nothing is imported)."""
GIT_TIMEOUT_S = 5.0
SOURCE = Path(__file__).resolve().parent
"""The package's source directory: git is asked about this tree, never about the working directory."""


def version_of(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _git(*args: str, cwd: Path) -> str | None:
    """``git ARGS`` in ``cwd``: its stdout, or None (no git, not a work tree, too slow, an error)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def from_git(source: Path = SOURCE) -> dict[str, Any] | None:
    """Commit and dirty flag of the git work tree that tracks ``source/__init__.py``; None otherwise (a wheel
    unpacked inside some other repository does not count: there the package's files are not tracked)."""
    if not (_git("ls-files", "--", "__init__.py", cwd=source) or "").strip():
        return None
    commit, status = _git("rev-parse", "HEAD", cwd=source), _git("status", "--porcelain", cwd=source)
    if commit is None or status is None:
        return None
    return {"commit": commit.strip(), "dirty": bool(status.strip()), "source": "git"}


def from_metadata(distribution: str = PACKAGE) -> dict[str, Any]:
    """The installed package's commit as pip recorded it (``direct_url.json`` ``vcs_info``), else null."""
    commit = None
    try:
        text = metadata.distribution(distribution).read_text("direct_url.json")
        commit = (json.loads(text or "{}").get("vcs_info") or {}).get("commit_id")
    except (metadata.PackageNotFoundError, ValueError, AttributeError):
        pass
    return {"commit": commit, "dirty": None, "source": "metadata"}


@functools.cache
def package_record() -> dict[str, Any]:
    """``provenance["package"]``, once per process."""
    return {"name": PACKAGE, "version": version_of(PACKAGE), **(from_git() or from_metadata())}


@functools.cache
def library_versions() -> dict[str, str | None]:
    """``provenance["libraries"]``, once per process."""
    return {"python": platform.python_version(), **{name: version_of(name) for name in LIBRARIES}}


@functools.cache
def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` ``model name``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def accelerator_kind(accelerator: Any) -> str:
    """``trainer.accelerator`` as Lightning resolves it: ``auto`` picks cuda, then mps, then cpu."""
    import torch

    if accelerator is not None and not isinstance(accelerator, str):  # an Accelerator instance
        return type(accelerator).__name__.lower().removesuffix("accelerator") or "unknown"
    kind = (accelerator or "auto").lower()
    if kind == "auto":
        mps = getattr(torch.backends, "mps", None)
        return "cuda" if torch.cuda.is_available() else "mps" if mps is not None and mps.is_available() else "cpu"
    return "cuda" if kind == "gpu" else kind


def device_record(accelerator: Any, threads: dict[str, int]) -> dict[str, Any]:
    """``provenance["device"]``: the accelerator, its name (GPU 0's, or the CPU model), the run's torch threads
    per phase and the CPUs this process may use (``machine.available_cpus``)."""
    kind = accelerator_kind(accelerator)
    name = cpu_name()
    if kind == "cuda":
        import torch

        name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cuda (not available)"
    return {"accelerator": kind, "name": name, "threads": dict(threads), "cpus": available_cpus()}


def provenance(threads: dict[str, int], accelerator: Any = "auto") -> dict[str, Any]:
    """The record of this process: ``package``, ``libraries``, ``device`` (the module docstring's layout)."""
    return {"package": dict(package_record()), "libraries": dict(library_versions()),
            "device": device_record(accelerator, threads)}
