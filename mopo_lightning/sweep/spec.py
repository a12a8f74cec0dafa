"""The sweep file: one ``fit`` configuration and a grid of dotted ``fit`` keys, expanded into trials.

A sweep file is YAML (``conf/sweeps/*.yaml``)::

    config: conf/hopper_mixed.yaml     # base fit config(s): a path or a list, as ``fit --config``
    trainer:                           # any other fit key, nested or dotted, applied after the config
      max_epochs: 1000
    grid:                              # dotted fit keys -> lists of values; every combination is a trial
      seed_everything: [0, 1, 2]
      data.rollout_length: [1, 5]
      data.penalty_coef: [1.0, 5.0]

Relative paths are taken from the current directory, as in ``fit``; a ``config`` not found there is looked
up beside the sweep file. The sweep owns ``run_name``, ``run_root``, ``ckpt_path``, ``dynamics_cache`` and
``num_threads``: they may not be set in the file.

Trial order: keys that enter the stage-1 fingerprint (``seed_everything``, ``data.*`` dataset keys,
``dynamics.*``) vary fastest, so the first trials to start need different dynamics models and train them
side by side; later trials load them from the shared cache instead of queueing on one model's lock.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mopo_lightning.guards import ConfigError

RESERVED = ("run_name", "run_root", "ckpt_path", "dynamics_cache", "num_threads", "overwrite")
"""Fit keys that the sweep sets for every trial."""

FINGERPRINT_KEYS = ("seed_everything", "data.dataset", "data.path", "data.task", "data.holdout", "dynamics.")
"""Grid keys that (may) change the dynamics model; they vary fastest in the trial order."""

SHORT = {"seed_everything": "s", "data.rollout_length": "h", "data.penalty_coef": "lam",
         "data.penalty_kind": "pen", "data.real_ratio": "real"}
"""Short names of common grid keys in trial names (``h5-lam1-s0``); other keys use their last part."""


@dataclass(frozen=True)
class Trial:
    """One point of the grid: its name (= run directory name) and the fit arguments that make it."""

    name: str
    overrides: dict[str, Any]
    """The grid's dotted keys and this trial's values."""
    fit_args: tuple[str, ...]
    """``fit`` arguments without ``--ckpt_path`` (the trainable adds ``--ckpt_path last`` to resume)."""

    def command(self, resume: bool = False) -> str:
        """The shell command that runs this trial alone."""
        extra = ("--ckpt_path", "last") if resume else ()
        return shlex.join(["mopo-lightning", "fit", *self.fit_args, *extra])


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file."""

    path: Path
    configs: tuple[str, ...]
    fit_keys: dict[str, Any]
    grid: dict[str, list[Any]]

    def trials(self, sweep_dir: Path, dynamics_cache: Path, num_threads: int) -> list[Trial]:
        """Every grid point as a ``Trial``, in start order (fingerprint keys vary fastest)."""
        slow = [k for k in self.grid if not _is_fingerprint_key(k)]
        fast = [k for k in self.grid if _is_fingerprint_key(k)]
        order = slow + fast  # itertools.product varies its last factor fastest
        common = [arg for config in self.configs for arg in ("--config", config)]
        common += [arg for key, value in self.fit_keys.items() for arg in (f"--{key}", cli_value(value))]
        trials, names = [], set()
        for values in itertools.product(*(self.grid[k] for k in order)):
            point = dict(zip(order, values))
            overrides = {k: point[k] for k in self.grid}  # the file's key order, for names and tables
            name = trial_name(overrides)
            if name in names:
                raise ConfigError(f"{self.path}: two grid points are both named {name!r}; make the grid's values "
                                  "distinct after formatting")
            names.add(name)
            args = [*common, *(a for k, v in overrides.items() for a in (f"--{k}", cli_value(v))),
                    "--run_name", name, "--run_root", str(sweep_dir), "--dynamics_cache", str(dynamics_cache),
                    "--num_threads", str(num_threads)]
            trials.append(Trial(name, overrides, tuple(args)))
        return trials


def _is_fingerprint_key(key: str) -> bool:
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in FINGERPRINT_KEYS)


def cli_value(value: Any) -> str:
    """A YAML value as one command-line word: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _format(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str) and ("/" in text or text.endswith((".hdf5", ".h5"))):
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9._+]+", "_", text)


def trial_name(overrides: dict[str, Any]) -> str:
    """``{"data.rollout_length": 5, "data.penalty_coef": 1.0, "seed_everything": 0}`` -> ``h5-lam1-s0``."""
    if not overrides:
        return "trial"
    return "-".join(f"{SHORT.get(k, k.rsplit('.', 1)[-1])}{_format(v)}" for k, v in overrides.items())


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _reserved(key: str) -> bool:
    return key in RESERVED


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; ``ConfigError`` (one line, naming the key) for anything wrong."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"sweep file {path}: no such file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"sweep file {path}: not YAML ({' '.join(str(error).split())})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping with a `grid:` section")
    data = dict(data)
    grid = data.pop("grid", None)
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"sweep file {path}: `grid:` must map dotted fit keys to lists of values")
    grid = _flatten({k: v for k, v in grid.items() if not isinstance(v, list)}) | {
        k: v for k, v in grid.items() if isinstance(v, list)}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep file {path}: grid key {key!r} needs a non-empty list of values")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"sweep file {path}: grid key {key!r} lists a value twice")
    configs = data.pop("config", None)
    configs = [] if configs is None else [configs] if isinstance(configs, str) else list(configs)
    fit_keys = _flatten(data)
    for key in [*fit_keys, *grid]:
        if _reserved(key):
            raise ConfigError(f"sweep file {path}: {key!r} is set by the sweep for every trial; remove it")
    both = sorted(set(fit_keys) & set(grid))
    if both:
        raise ConfigError(f"sweep file {path}: {both[0]!r} is both a fixed key and a grid key")
    return Sweep(path, tuple(_find_config(c, path) for c in configs), fit_keys, grid)


def _find_config(config: str, sweep_file: Path) -> str:
    """A base config as given when it exists from the current directory, else beside the sweep file."""
    if Path(config).is_file():
        return config
    beside = sweep_file.parent / config
    if beside.is_file():
        return os.path.relpath(beside)
    raise ConfigError(f"sweep file {sweep_file}: config {config!r} not found (from the current directory "
                      f"or beside the sweep file)")
