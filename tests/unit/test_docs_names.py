"""Every dotted name of the package that the README or docs/ cite in code spans must import.

A doc that names a class or function that no longer exists (``D4RLDataModule``, ``attach_dynamics``) sends a
user to nothing. Which spans are names of code (config keys such as ``data.task`` or ``dynamics.max_time``
look the same): a call (``x.y(``), a chain with a capitalised part (``SACModule.update``), a chain that
starts ``mopo_lightning``, or one whose first two parts are a module of the package (``training.run_dir``).
Module-qualified names are written from the package root (``training.run_dir.RunDirectory``); a name that
starts with a class (``Task.termination_fn``) is found among the package's modules. Library names in prose
(``torch.compile``, ``Adam.step``) are listed in ``LIBRARY_HEADS``.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LIBRARY_HEADS = {"torch", "Tensor", "Adam", "LightningOptimizer", "loss", "optimizer", "np", "numpy", "L",
                 "lightning", "LightningCLI", "Trainer", "EnvBase", "SACLoss", "TensorDict", "jsonargparse", "rly",
                 "rliable", "gymnasium", "gym", "mujoco", "ray", "tune", "minari", "h5py", "scipy", "clip", "add_"}
"""First parts of names that belong to libraries, not to this package."""
SPAN = re.compile(r"`([^`\n]+)`")
NAME = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+)(\(?)")
CALL = re.compile(r"^([A-Za-z_]\w*)\(")
"""A bare call such as ``attach_dynamics(ensemble)``: some module or class of the package must define it."""


@cache
def modules() -> dict[str, object]:
    """Every module of the package, imported, by its name under ``mopo_lightning``."""
    package = importlib.import_module("mopo_lightning")
    found = {"": package}
    for info in pkgutil.walk_packages(package.__path__, "mopo_lightning."):
        found[info.name.removeprefix("mopo_lightning.")] = importlib.import_module(info.name)
    return found


def _attribute(owner: object, name: str) -> object:
    """``getattr``, or a dataclass field or annotated attribute of a class (no class attribute of its own)."""
    if hasattr(owner, name):
        return getattr(owner, name)
    if isinstance(owner, type):
        if dataclasses.is_dataclass(owner) and name in {f.name for f in dataclasses.fields(owner)}:
            return object()
        if any(name in getattr(k, "__annotations__", {}) for k in owner.__mro__):
            return object()
    raise AttributeError(name)


def resolves(chain: str) -> bool:
    """Whether ``chain`` names a module, or an attribute path in one, of the package."""
    parts = chain.removeprefix("mopo_lightning.").split(".")
    if len(parts) == 1:
        return chain in defined_names()
    mods = modules()
    for cut in range(len(parts), 0, -1):
        module = mods.get(".".join(parts[:cut]))
        if module is not None:
            candidates = [module]
            break
    else:
        cut, candidates = 1, [getattr(m, parts[0]) for m in mods.values() if hasattr(m, parts[0])]
    for owner in candidates:
        try:
            for part in parts[cut:]:
                owner = _attribute(owner, part)
            return True
        except AttributeError:
            continue
    return False


@cache
def defined_names() -> set[str]:
    """Every top-level name of the package's modules, and every attribute of their classes."""
    names = set(__builtins__ if isinstance(__builtins__, dict) else dir(__builtins__))
    for module in modules().values():
        for name, value in vars(module).items():
            names.add(name)
            if isinstance(value, type) and value.__module__.startswith("mopo_lightning"):
                names.update(dir(value))
                names.update(f.name for f in dataclasses.fields(value)) if dataclasses.is_dataclass(value) else None
    return names


def cited_names() -> list[tuple[str, str]]:
    """(doc, dotted name) for every code span that names code of the package (see the module docstring)."""
    out = []
    for doc in DOCS:
        for span in SPAN.finditer(doc.read_text()):
            text = span.group(1).strip()
            if (bare := CALL.match(text)) and bare.group(1) not in LIBRARY_HEADS:
                out.append((doc.name, bare.group(1)))
            match = NAME.match(text)
            if not match:
                continue
            chain, call = match.groups()
            parts = chain.split(".")
            if parts[0] in LIBRARY_HEADS:
                continue
            if (call or parts[0] == "mopo_lightning" or any(p[0].isupper() for p in parts)
                    or ".".join(parts[:2]) in modules()):
                out.append((doc.name, chain))
    return sorted(set(out))


def test_docs_cite_names():
    """The scan finds the names it should (so an empty scan cannot pass the test below)."""
    names = {chain for _, chain in cited_names()}
    assert {"training.run_dir.RunDirectory", "Task.termination_fn"} <= names
    assert "data.task" not in names and "dynamics.max_time" not in names  # config keys


@pytest.mark.parametrize(("doc", "chain"), cited_names())
def test_cited_name_imports(doc: str, chain: str):
    assert resolves(chain), f"{doc} cites `{chain}`, which the package does not have"


def test_resolver_refuses_missing_names():
    assert not resolves("training.datamodule.D4RLDataModule")
    assert not resolves("SACModule.no_such_method") and not resolves("attach_dynamics")
    assert resolves("policy.sac.SACModule.update") and resolves("tasks.Task.termination_fn")
