"""Where a manually optimised module may skip Lightning's wrappers: ``loss.backward()`` for ``manual_backward``,
``optimizer.step()`` for ``LightningOptimizer.step``.

On one device in plain fp32 with no hook or profiler to serve, both wrappers only dispatch hooks over every
callback (and count steps). Both manually optimised modules use them: the SAC update runs two backward passes and
three optimizer steps in ~10 ms on one CPU thread, a stage-1 step one of each in ~20 ms, so each dispatch shows. Anything that needs Lightning's path keeps it: other strategies (DDP
prepares its reducer), precisions (loss scaling), a profiler, and any callback or module that overrides a hook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.profilers import PassThroughProfiler
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch import Tensor

if TYPE_CHECKING:
    from lightning.pytorch.loops.progress import _Progress

_BACKWARD_HOOKS = ("on_before_backward", "on_after_backward")
_STEP_HOOKS = ("on_before_optimizer_step",)


def _plain(trainer: L.Trainer) -> bool:
    return type(trainer.strategy) is SingleDeviceStrategy and type(trainer.precision_plugin) is Precision


def _hooked(trainer: L.Trainer, module: L.LightningModule, hooks: tuple[str, ...]) -> bool:
    owners = [(module, L.LightningModule), *((callback, L.Callback) for callback in trainer.callbacks)]
    return any(is_overridden(hook, obj, base) for obj, base in owners for hook in hooks)


def backward_needs_lightning(trainer: L.Trainer, module: L.LightningModule) -> bool:
    """Whether ``manual_backward`` does more here than ``loss.backward()``.

    Measured: ~0.8 ms of a ~20 ms update (4%) in the real loop when an update ran three backward passes (both
    paths alternated inside one ``benchmarks/fit_loop.py`` run; it runs two since).
    """
    return not _plain(trainer) or is_overridden("backward", module, L.LightningModule) or _hooked(
        trainer, module, _BACKWARD_HOOKS)


def direct_step_counter(trainer: L.Trainer, module: L.LightningModule) -> _Progress | None:
    """The progress counter that ``LightningOptimizer.step`` advances (``trainer.global_step`` reads it), when
    counting it and calling ``optimizer.step()`` is all that step would do here; else ``None`` (keep Lightning's).

    Measured in the real loop (HalfCheetah, one thread): ``LightningOptimizer.step`` took 0.25 ms per call against
    ~0.1 ms for the fused Adam step alone, three calls per update (docs/performance.md).
    """
    if not _plain(trainer) or type(trainer.profiler) is not PassThroughProfiler or module.automatic_optimization:
        return None
    if _hooked(trainer, module, _STEP_HOOKS):
        return None
    loop = getattr(getattr(trainer.fit_loop, "epoch_loop", None), "manual_optimization", None)
    progress = getattr(loop, "optim_step_progress", None)
    has_api = all(callable(getattr(progress, name, None)) for name in ("increment_ready", "increment_completed"))
    return progress if has_api else None


@dataclass
class ManualSteps:
    """How a manually optimised module runs backward and its optimizer steps; ``ManualSteps()`` (plain
    ``loss.backward()`` and ``optimizer.step()``) serves a module without a Trainer."""

    direct_backward: bool = True
    step_counter: _Progress | None = None  # set: step the wrapped optimizers directly, counting as Lightning does

    def __getstate__(self) -> dict:
        """A copy (pickle, deepcopy) is unresolved: the step counter belongs to one Trainer's loop, so the module
        resolves its shortcuts again at its next fit."""
        return vars(ManualSteps())

    @classmethod
    def resolve(cls, trainer: L.Trainer, module: L.LightningModule) -> ManualSteps:
        """The shortcuts that hold under ``trainer`` (call at fit start: callbacks and strategy are known)."""
        return cls(not backward_needs_lightning(trainer, module), direct_step_counter(trainer, module))

    def backward(self, module: L.LightningModule, loss: Tensor) -> None:
        """``loss.backward()``, or ``module.manual_backward(loss)`` where Lightning's backward is needed."""
        if self.direct_backward:
            loss.backward()
        else:
            module.manual_backward(loss)

    def step(self, *opts: torch.optim.Optimizer) -> None:
        """Step each of ``opts`` (the module's optimizers: ``LightningOptimizer``s under a Trainer)."""
        for opt in opts:
            if self.step_counter is None:
                opt.step()
            else:  # what LightningOptimizer.step does here (see ``direct_step_counter``), without its dispatch
                self.step_counter.increment_ready()
                opt.optimizer.step()
                self.step_counter.increment_completed()

    def run(self, module: L.LightningModule, loss: Tensor, *opts: torch.optim.Optimizer) -> None:
        """Zero ``opts``' gradients, backpropagate ``loss``, step each of ``opts``."""
        for opt in opts:
            opt.zero_grad(set_to_none=True)
        self.backward(module, loss)
        self.step(*opts)
