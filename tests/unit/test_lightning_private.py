"""The package reaches Lightning on its public paths only (docs/architecture.md, "Rules of the house").

A private name of Lightning (``_Progress``, ``self._trainer``, the loops behind ``trainer.fit_loop``, the helpers
inside its progress bar) can change in any release without notice; the package then miscounts or breaks with no
test naming the cause. Every import and attribute of the package is read here: an import from a private or internal
Lightning module, a private name imported from Lightning, or a private attribute of a Trainer or module fails, unless
``ALLOWED`` names it (with docs/architecture.md naming the use, its measured worth and a test pinning it: none now).
"""

from __future__ import annotations

import ast
from pathlib import Path

import lightning as L
import pytest
import torch

from mopo_lightning.lightning_paths import trainer_of

PACKAGE = Path(__file__).resolve().parents[2] / "mopo_lightning"
LIGHTNING = ("lightning", "pytorch_lightning", "lightning_fabric")
INTERNAL_MODULES = (
    "lightning.pytorch.loops",  # the loops and their progress counters
    "lightning.pytorch.trainer.connectors",  # the logger, checkpoint and data connectors
    "lightning.pytorch.callbacks.progress.tqdm_progress",  # Tqdm, convert_inf (TQDMProgressBar is exported)
)
"""Lightning modules without an underscore whose contents are its internals."""
PRIVATE_ATTRIBUTES = {"_trainer", "fit_loop", "epoch_loop", "manual_optimization", "optim_step_progress",
                      "_results", "_logger_connector", "_batches_that_stepped"}
"""Attributes (or ``getattr`` strings) of a Trainer or LightningModule that reach Lightning's internals."""
ALLOWED: set[tuple[str, str]] = set()
"""(module path, name) pairs allowed anyway, each named in docs/architecture.md with its measurement and test."""


def lightning_private_uses(source: str, rel: str) -> list[str]:
    """Each private use of Lightning in the module ``rel`` (path under the package) of text ``source``, as
    ``"line: what"``."""
    tree = ast.parse(source, rel)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIGHTNING:
            internal = any(part.startswith("_") for part in node.module.split(".")) or any(
                node.module == m or node.module.startswith(m + ".") for m in INTERNAL_MODULES)
            for alias in node.names:
                if internal or alias.name.startswith("_"):
                    found.append(f"{node.lineno}: from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] in LIGHTNING and (any(p.startswith("_") for p in parts) or any(
                        alias.name == m or alias.name.startswith(m + ".") for m in INTERNAL_MODULES)):
                    found.append(f"{node.lineno}: import {alias.name}")
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            found.append(f"{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Constant) and node.value in PRIVATE_ATTRIBUTES:  # getattr(trainer, "fit_loop")
            found.append(f"{node.lineno}: {node.value!r}")
    return [use for use in found if (rel, use.split(": ", 1)[1]) not in ALLOWED]


def test_the_package_uses_no_private_lightning_api():
    uses = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = str(path.relative_to(PACKAGE))
        uses[rel] = lightning_private_uses(path.read_text(), rel)
    assert not {path: found for path, found in uses.items() if found}


@pytest.mark.parametrize("source", [
    "from lightning.pytorch.loops.progress import _Progress",
    "from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf",
    "import lightning.pytorch.trainer.connectors.logger_connector",
    "attached = self._trainer is not None",
    "counter = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress",
    "loop = getattr(trainer, 'fit_loop', None)",
])
def test_the_scan_finds_each_private_use_the_package_had(source):
    assert lightning_private_uses(source + "\n", "probe.py"), source


class _Probe(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[object] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(trainer_of(self))
        return self.layer(batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_of_reads_lightnings_public_property():
    """``trainer_of`` rests on ``LightningModule.trainer`` raising ``RuntimeError`` when no Trainer is attached
    (Lightning 2.x): a release that returns None or raises another error type fails here."""
    module = _Probe()
    with pytest.raises(RuntimeError, match="not attached"):
        _ = module.trainer
    assert trainer_of(module) is None
    trainer = L.Trainer(max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 1)), batch_size=2)
    trainer.fit(module, data)
    assert module.seen == [trainer, trainer]
