"""Config keys that moved: an old key, on a command line, in a ``--config`` YAML or in a sweep file, fails with
one line naming the new one (there is no silent alias: one name per concept)."""

from __future__ import annotations

from pathlib import Path

from mopo_lightning.files import read_yaml
from mopo_lightning.guards import ConfigError

MOPO_KEYS = ("rollout_length", "penalty_coef", "penalty_kind", "penalty_units", "rollout_batch_size", "rollout_freq",
             "model_retain_epochs", "real_ratio", "reward_mode")
RENAMED_KEYS = {
    "data.penalty": "mopo.penalty_kind", "dynamics.num_hidden": "dynamics.num_layers",
    **{f"data.{key}": f"mopo.{key}" for key in MOPO_KEYS},
    "dynamics.max_seconds": "dynamics.max_time", "premise.horizon": "premise.rollout_length",
    "data.collect_path": "collect.path", "data.collect_steps": "collect.steps", "data.collect_policy": "collect.policy",
}
"""Config keys that moved (old -> new): an old key fails with one line naming the new one."""


def check_renamed_keys(argv: list[str]) -> None:
    """Raise ``ConfigError`` for a moved key on the command line or in a ``--config`` YAML."""
    def refuse(old: str, where: str) -> None:
        raise ConfigError(f"{where}: `{old}` was renamed to `{RENAMED_KEYS[old]}`")

    for i, token in enumerate(argv):
        key = token.removeprefix("--").split("=", 1)[0]
        if token.startswith("--") and key in RENAMED_KEYS:
            refuse(key, "command line")
        if token == "--config" and i + 1 < len(argv) or token.startswith("--config="):
            path = Path(argv[i + 1] if token == "--config" else token.split("=", 1)[1])
            tree = read_yaml(path) if path.is_file() else None
            for old in RENAMED_KEYS:
                node = tree
                for part in old.split("."):
                    if not (isinstance(node, dict) and part in node):
                        break
                    node = node[part]  # a key set to null counts: it is there
                else:
                    refuse(old, str(path))
