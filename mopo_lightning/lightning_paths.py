"""How the manually optimised modules (stage 1 and SAC) meet Lightning: on its public paths only.

Under a Trainer every backward goes through ``LightningModule.manual_backward`` and every optimizer step through
the ``LightningOptimizer`` that ``optimizers()`` returns, so hooks, profilers, precisions, strategies and the
``global_step`` count stay Lightning's. The shortcuts past those two wrappers (``loss.backward()``, and
``optimizer.step()`` advancing Lightning's private step counter) measured ~1% of an epoch each in the real loop and
were removed (docs/performance.md, "Lightning on its public paths"). A SAC module updated without a Trainer (online
collection) backpropagates and steps its own optimizers plainly.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor


def trainer_of(module: L.LightningModule) -> L.Trainer | None:
    """The Trainer ``module`` is attached to, or None. Lightning's public ``LightningModule.trainer`` raises
    ``RuntimeError`` when there is none (Lightning 2.x; ``tests/unit/test_lightning_private.py`` pins it)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def backward_and_step(module: L.LightningModule, loss: Tensor, *opts: torch.optim.Optimizer) -> None:
    """Zero ``opts``' gradients, backpropagate ``loss``, step each of ``opts``: Lightning's ``manual_backward`` and
    ``LightningOptimizer.step`` under a Trainer, ``loss.backward()`` and ``optimizer.step()`` without one."""
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    if trainer_of(module) is None:
        loss.backward()
    else:
        module.manual_backward(loss)
    for opt in opts:
        opt.step()
