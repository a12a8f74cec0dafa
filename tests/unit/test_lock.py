"""The lock (``constraints.txt``): ``make install`` takes its versions, so a fresh clone gets what the tests
passed with, and the suite fails when the installed libraries drift from it."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "constraints.txt"
BOUNDED = ("lightning", "torchrl", "tensordict", "jsonargparse", "rliable", "gymnasium", "mujoco", "minari")
"""Libraries whose internals or wording the package relies on: pyproject gives each an upper bound."""


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]


def test_install_uses_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"pip install -q -c \$\(LOCK\) -e \"\.\[dev\]\"", makefile)
    assert "LOCK := constraints.txt" in makefile and "\nlock:" in makefile


def test_installed_versions_are_the_locked_ones():
    pins = locked()
    drifted = {name: (version, metadata.version(name)) for name, version in pins.items()
               if _installed(name) and metadata.version(name) != version}
    assert not drifted, f"installed versions differ from constraints.txt (locked, installed): {drifted}"


def test_lock_covers_and_satisfies_pyproject():
    pins = locked()
    for req in requirements():
        name = canonicalize_name(req.name)
        if name == "torch":
            assert name not in pins  # the Makefile's TORCH pins it (CPU wheel or a GPU build)
            continue
        assert name in pins, f"{req.name} is not in constraints.txt (run make lock)"
        assert req.specifier.contains(pins[name], prereleases=True), f"locked {name}=={pins[name]} violates {req}"


def test_touched_libraries_are_bounded():
    bounds = {canonicalize_name(r.name): r.specifier for r in requirements()}
    for name in BOUNDED:
        assert any(s.operator in ("<", "<=", "==", "~=") for s in bounds[name]), f"{name} needs an upper bound"


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True
