"""Whether a manually optimised module must call ``manual_backward`` or may call ``loss.backward()`` itself."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden

_BACKWARD_HOOKS = ("on_before_backward", "on_after_backward")


def backward_needs_lightning(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether ``manual_backward`` does more here than ``loss.backward()``.

    On one device in plain fp32 it adds only the ``on_before_backward``/``on_after_backward`` hooks:
    a dispatch over every callback per backward, ~0.8 ms of a ~20 ms update (4%) in the real loop when an
    update ran three backward passes (both paths alternated inside one ``benchmarks/fit_loop.py`` run; it
    runs two since). Other strategies (DDP prepares its
    reducer), precisions (loss scaling), and any callback or module that overrides a backward hook keep
    Lightning's path.
    """
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
        return True
    if is_overridden("backward", module, L.LightningModule):
        return True
    owners = [(module, L.LightningModule), *((callback, L.Callback) for callback in trainer.callbacks)]
    return any(is_overridden(hook, obj, base) for obj, base in owners for hook in _BACKWARD_HOOKS)
