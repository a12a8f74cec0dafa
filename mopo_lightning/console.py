"""What a user's terminal shows: third-party noise filtered narrowly, by name, so real warnings still show.

Filtered, each matched by its own text or logger:
- Lightning's deprecation of ``LeafSpec`` (its own internal use of torch's pytree; nothing a user can act on);
- Lightning's note that an ``IterableDataset`` has ``__len__`` (our batch iterables are single-process and
  their length is exact: one epoch of SAC updates, or one pass of bootstrap batches);
- Lightning's "Tip" advertising a cloud logger;
- Lightning's "GPU/TPU/HPU available" start-up lines (printed once per stage; the device is in the config)
  its "`Trainer.fit` stopped" line (the closing summary says how the run ended) and "Seed set to N"
  (the seed is in the config and in results.json);
- MuJoCo's compiler warning that ``settotalmass`` is deprecated (gymnasium's own v4 XML files use it).
"""

from __future__ import annotations

import logging
import warnings

_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r"Your `IterableDataset` has `__len__` defined.*",
)


class _DropMessages(logging.Filter):
    """Drops log records whose message starts with one of ``prefixes``."""

    def __init__(self, *prefixes: str) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).lstrip().startswith(self.prefixes)


def quiet_third_party() -> None:
    """Install the filters listed in the module docstring (idempotent)."""
    for pattern in _WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    drop = _DropMessages("💡 Tip:", "GPU available:", "TPU available:", "HPU available:", "`Trainer.fit` stopped:",
                         "Seed set to")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.seed"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(drop)
    try:
        import mujoco

        previous = mujoco.get_mju_user_warning()

        def mujoco_warning(message: str) -> None:
            if "settotalmass" in message:
                return
            if previous is not None:
                previous(message)
            else:
                warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

        mujoco.set_mju_user_warning(mujoco_warning)
    except (ImportError, AttributeError):  # pragma: no cover - MuJoCo without the hook
        pass
