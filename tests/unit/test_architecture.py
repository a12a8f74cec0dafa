"""The package's layering (docs/architecture.md): imports point down the layers, and there is no cycle.

Every ``import`` in every module counts, function-level and ``TYPE_CHECKING`` ones included: an upward
arrow hidden inside a function is still an upward arrow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "mopo_lightning"

# Lowest first. A module may import from its own layer and the layers below it, never above.
LAYERS: list[tuple[str, ...]] = [
    ("guards", "files", "progress", "transitions", "console", "machine", "config_keys", "lightning_paths",
     "provenance"),  # foundations
    ("envs.termination", "envs.rewards"),  # pure functions of the real tasks
    ("envs.tasks",),  # the registry
    ("envs.wrappers", "data"),  # the real envs; offline datasets (data/dataset.py: what a run names)
    ("dynamics",),  # the ensemble and its training
    # the learned model as an MDP (penalties, env, rollouts); the premise diagnostics
    ("model_env", "diagnostics"),
    ("policy",),  # SAC
    ("collection", "training", "callbacks", "report", "analysis", "selection"),  # collection; the training loop
    ("recipe",),  # MOPO, the algorithm in the paper's order
    ("sweep",),  # a grid of fit runs on Ray Tune: the spec, the trials, the Tuner
    ("commands",),  # every command's entry point and the table that dispatches to them
]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(parts)


def layer_of(module: str) -> int:
    """The layer of the longest matching prefix.

    Package ``__init__`` modules sit at the bottom (they hold docstrings only), so they can import nothing
    from a layer above without failing the layering test.
    """
    if module == "" or (PACKAGE / module.replace(".", "/") / "__init__.py").exists():
        return 0
    best, depth = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > depth:
                best, depth = index, len(prefix)
    if best is None:
        raise AssertionError(f"mopo_lightning.{module} is in no layer: add it to LAYERS and docs/architecture.md")
    return best


def project_imports(path: Path) -> set[str]:
    """Project modules imported anywhere in ``path`` (relative to the package, '' for the root)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == "mopo_lightning" or name.startswith("mopo_lightning."):
                found.add(name.removeprefix("mopo_lightning").removeprefix("."))
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        # "from pkg import mod" names a module when mod is one; otherwise it names an attribute of pkg.
        targets = {t for t in project_imports(path) if t in modules}
        edges[name] = targets - {name}
    return edges


def test_every_module_has_a_layer():
    for name in graph():
        layer_of(name)


def test_imports_point_down_the_layers():
    upward = [
        f"mopo_lightning.{src} (layer {layer_of(src)}) imports mopo_lightning.{dst} (layer {layer_of(dst)})"
        for src, dsts in graph().items()
        for dst in dsts
        if layer_of(dst) > layer_of(src)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(f"mopo_lightning.{m}" for m in cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path):
    """The walker must catch the imports that hide: inside functions and under TYPE_CHECKING."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mopo_lightning.training.datamodule import OfflineDataModule\n"
        "def f():\n    import mopo_lightning.commands.cli\n    from mopo_lightning.model_env import rollouts\n"
    )
    assert {"training.datamodule", "commands.cli", "model_env", "model_env.rollouts"} <= project_imports(source)
