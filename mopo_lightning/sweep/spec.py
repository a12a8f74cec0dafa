"""The sweep file: fit configurations x named arms x a grid of dotted ``fit`` keys, expanded into trials.

A sweep file is YAML (``conf/sweeps/*.yaml``). The paper's Table 1 is one file::

    configs:                           # one entry per dataset: a fit config (path, or list of paths) ...
      - conf/hopper_mixed.yaml
      - {config: conf/hopper_random.yaml, name: hopper_rnd, data.path: data/h.hdf5}  # ... or with overrides
    arms:                              # named methods: overrides applied to every config (optional)
      MOPO: {}                         #   the configs as given (each dataset's own h and lambda)
      MBPO: {mopo.penalty_coef: 0.0}   #   the same without the penalty
    trainer:                           # any other fit key, nested or dotted, applied to every trial
      max_epochs: 1000
    grid:                              # dotted fit keys -> lists of values; every combination is a trial
      seed_everything: [0, 1, 2, 3]

``config: FILE`` is shorthand for ``configs: [FILE]`` (one configuration). Keys apply in this order:
the config files, the fixed keys, a config entry's overrides, the arm's, the grid point's. An arm's name
is passed to ``fit --method``, so ``report`` groups runs by it. Trial names join the config's name (when
there are several), the arm (when there are arms) and the grid point: ``hopper_mixed-MBPO-s0``.

Relative paths are taken from the current directory, as in ``fit``; a config not found there is looked up
beside the sweep file. The sweep owns ``run_name``, ``run_root``, ``ckpt_path``, ``dynamics_cache``,
``num_threads`` and ``overwrite`` (and ``method`` when it has arms): they may not be set in the file.

Trial order: configs and the keys that enter the stage-1 fingerprint (``dynamics.fingerprint.CONFIG_KEYS``)
vary fastest, so the first trials to start need different dynamics models and train them side by side;
later trials load them from the shared cache instead of queueing on one model's lock.
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

from mopo_lightning.config_keys import RENAMED_KEYS, check_renamed_keys
from mopo_lightning.dynamics.fingerprint import CONFIG_KEYS
from mopo_lightning.files import read_yaml
from mopo_lightning.guards import ConfigError

RESERVED = ("run_name", "run_root", "ckpt_path", "dynamics_cache", "num_threads", "overwrite")
"""Fit keys that the sweep sets for every trial."""

SHORT = {"seed_everything": "s", "mopo.rollout_length": "h", "mopo.penalty_coef": "lam",
         "mopo.penalty_kind": "", "mopo.real_ratio": "real"}
"""Short names of common grid keys in trial names (``h5-lam1-s0``); other keys use their last part."""
NAME = re.compile(r"[A-Za-z0-9_.+]+")
"""Config and arm names: they become parts of directory names."""


@dataclass(frozen=True)
class Trial:
    """One trial: its name (= run directory name) and the fit arguments that make it."""

    name: str
    overrides: dict[str, Any]
    """The config's name and arm (when the file has several / has arms), then the grid point's dotted keys."""
    fit_args: tuple[str, ...]
    """``fit`` arguments without ``--ckpt_path`` (the trainable adds ``--ckpt_path last`` to resume)."""

    def command(self, resume: bool = False) -> str:
        """The shell command that runs this trial alone."""
        extra = ("--ckpt_path", "last") if resume else ()
        return shlex.join(["mopo-lightning", "fit", *self.fit_args, *extra])


@dataclass(frozen=True)
class ConfigEntry:
    """One fit configuration of the sweep: its files, its name and its own overrides."""

    name: str
    files: tuple[str, ...]
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file."""

    path: Path
    configs: tuple[ConfigEntry, ...]
    arms: dict[str, dict[str, Any]]
    fit_keys: dict[str, Any]
    grid: dict[str, list[Any]]

    def trials(self, sweep_dir: Path, dynamics_cache: Path) -> list[Trial]:
        """Every (arm, grid point, config) as a ``Trial``, in start order (fingerprint keys vary fastest)."""
        slow = [k for k in self.grid if not is_fingerprint_key(k)]
        fast = [k for k in self.grid if is_fingerprint_key(k)]
        arms = list(self.arms.items()) or [(None, {})]
        trials, names = [], set()
        # itertools.product varies its last factor fastest: arms, slow keys, configs, fingerprint keys
        for (arm, arm_keys), slow_values, entry, fast_values in itertools.product(
                arms, itertools.product(*(self.grid[k] for k in slow)), self.configs,
                itertools.product(*(self.grid[k] for k in fast))):
            point = {**dict(zip(slow, slow_values, strict=True)), **dict(zip(fast, fast_values, strict=True))}
            point = {k: point[k] for k in self.grid}  # the file's key order, for names and tables
            labels = {**({"config": entry.name} if len(self.configs) > 1 else {}),
                      **({"method": arm} if arm is not None else {})}
            name = "-".join([*labels.values(), *([trial_name(point)] if point else [])]) or "trial"
            if name in names:
                raise ConfigError(f"{self.path}: two trials are both named {name!r}; make the config names and "
                                  "grid values distinct after formatting")
            names.add(name)
            keys = {**self.fit_keys, **entry.overrides, **arm_keys, **point}
            args = [*(a for f in entry.files for a in ("--config", f)),
                    *(a for k, v in keys.items() for a in (f"--{k}", cli_value(v))),
                    *(("--method", arm) if arm is not None else ()),
                    "--run_name", name, "--run_root", str(sweep_dir), "--dynamics_cache", str(dynamics_cache),
                    "--num_threads", "auto"]  # capped by the trial's CPUs (sweep.trial sets OMP_NUM_THREADS)
            trials.append(Trial(name, {**labels, **point}, tuple(args)))
        return trials


def is_fingerprint_key(key: str) -> bool:
    """Whether a fit key can change the dynamics model (``dynamics.fingerprint.CONFIG_KEYS``)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in CONFIG_KEYS)


def cli_value(value: Any) -> str:
    """A YAML value as one command-line word: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def _format(value: Any) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str) and ("/" in text or text.endswith((".hdf5", ".h5"))):
        text = Path(text).stem
    return re.sub(r"[^A-Za-z0-9._+]+", "_", text)


def trial_name(overrides: dict[str, Any]) -> str:
    """``{"mopo.rollout_length": 5, "mopo.penalty_coef": 1.0, "seed_everything": 0}`` -> ``h5-lam1-s0``."""
    return "-".join(f"{SHORT.get(k, k.rsplit('.', 1)[-1])}{_format(v)}" for k, v in overrides.items())


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _mapping(value: Any, what: str, path: Path) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"sweep file {path}: {what} must be a mapping of fit keys to values")
    return _flatten(value)


def _config_entry(item: Any, path: Path) -> ConfigEntry:
    """``conf/x.yaml``, ``[a.yaml, b.yaml]`` or ``{config: ..., name: ..., <fit keys>}``."""
    item = dict(item) if isinstance(item, dict) else {"config": item}
    files = item.pop("config", None)
    files = [files] if isinstance(files, str) else files
    if not files or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"sweep file {path}: a `configs:` entry needs `config:` (a path or a list of paths)")
    files = [_find_config(f, path) for f in files]
    name = str(item.pop("name", None) or Path(files[-1]).stem)
    if not NAME.fullmatch(name):
        raise ConfigError(f"sweep file {path}: config name {name!r} may hold only letters, digits, '_', '.', '+'")
    return ConfigEntry(name, tuple(files), _mapping(item, f"config {name!r}", path))


def load_sweep(path: str | Path) -> Sweep:
    """Read and check a sweep file; ``ConfigError`` (one line, naming the key) for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"sweep file {path}: no such file")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping with `configs:` (or `config:`) and `grid:`")
    data = dict(data)
    grid = data.pop("grid", None) or {}
    if not isinstance(grid, dict):
        raise ConfigError(f"sweep file {path}: `grid:` must map dotted fit keys to lists of values")
    grid = _flatten({k: v for k, v in grid.items() if not isinstance(v, list)}) | {
        k: v for k, v in grid.items() if isinstance(v, list)}
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"sweep file {path}: grid key {key!r} needs a non-empty list of values")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"sweep file {path}: grid key {key!r} lists a value twice")
    if "config" in data and "configs" in data:
        raise ConfigError(f"sweep file {path}: give `config:` (one configuration) or `configs:` (several), not both")
    one = data.pop("config", None)
    items = data.pop("configs", None) if one is None else [one]
    if items is not None and (not isinstance(items, list) or not items):
        raise ConfigError(f"sweep file {path}: `configs:` must be a non-empty list of fit configs")
    configs = [_config_entry(item, path) for item in items] if items else [ConfigEntry("config", (), {})]
    if len({c.name for c in configs}) != len(configs):
        raise ConfigError(f"sweep file {path}: two configs share a name; give them distinct `name:`s")
    arms = data.pop("arms", None) or {}
    if not isinstance(arms, dict):
        raise ConfigError(f"sweep file {path}: `arms:` must map method names to overrides")
    for arm in arms:
        if not NAME.fullmatch(str(arm)):
            raise ConfigError(f"sweep file {path}: arm name {arm!r} may hold only letters, digits, '_', '.', '+'")
    arms = {str(a): _mapping(v, f"arm {a!r}", path) for a, v in arms.items()}
    if not grid and len(configs) == 1 and not arms:
        raise ConfigError(f"sweep file {path}: nothing to sweep: give a `grid:`, several `configs:` or `arms:`")
    fit_keys = _flatten(data)
    reserved = RESERVED + (("method",) if arms else ())
    sources = [("fixed", fit_keys), ("grid", grid), *((f"arm {a!r}", k) for a, k in arms.items()),
               *((f"config {c.name!r}", c.overrides) for c in configs)]
    for where, keys in sources:
        for key in keys:
            if key in RENAMED_KEYS:
                raise ConfigError(f"sweep file {path}: `{key}` ({where}) was renamed to `{RENAMED_KEYS[key]}`")
            if key in reserved:
                raise ConfigError(f"sweep file {path}: {key!r} ({where}) is set by the sweep for every trial; "
                                  "remove it")
    both = sorted(set(fit_keys) & set(grid))
    if both:
        raise ConfigError(f"sweep file {path}: {both[0]!r} is both a fixed key and a grid key")
    return Sweep(path, tuple(configs), arms, fit_keys, grid)


def _find_config(config: str, sweep_file: Path) -> str:
    """A base config as given when it exists from the current directory, else beside the sweep file; its YAML
    syntax is checked here, so a broken config stops the sweep before any trial starts."""
    if Path(config).is_file():
        found = config
    elif (sweep_file.parent / config).is_file():
        found = os.path.relpath(sweep_file.parent / config)
    else:
        raise ConfigError(f"sweep file {sweep_file}: config {config!r} not found (from the current directory "
                          f"or beside the sweep file)")
    read_yaml(found)
    check_renamed_keys(["--config", found])
    return found
