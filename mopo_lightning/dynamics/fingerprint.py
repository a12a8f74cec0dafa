"""What made a dynamics ensemble: its fingerprint, the cache entry it names, and the entry's lock.

A trained ensemble is identified by everything that shapes its weights (the "Runs you can trust" issue):
- the dataset's bytes (SHA-256, hashed once per file state and remembered on disk), checked to be the bytes
  the run read: a file replaced between reading and hashing is refused;
- the loader and stage-1 data settings: ``data.task``, ``data.mode``, ``data.seed``, ``data.holdout_ratio``,
  ``data.max_holdout``, ``data.dynamics_batch_size``, ``data.max_rows``;
- every ``DynamicsModule`` hyper-parameter (defaults filled in, so an omitted key equals its default);
- the code that trains it: ``torch`` (its version: kernels and RNG streams change numbers between releases) and
  ``code_version`` (``DYNAMICS_CODE_VERSION``, bumped by hand whenever stage 1's numbers change).
Stage-2 settings (h, lambda, SAC) are not in it, so runs that differ only there share one trained model. A model
of another torch or code version has another key: the cache trains a new entry, and an explicit or the run's
own ``dynamics.ckpt`` is refused naming the field (``training/stage1.load_matching``).

The fingerprint is a flat dict of JSON values; its key is the first 16 hex digits of the SHA-256 of its
canonical JSON. A cache of trained ensembles is a directory of entries ``<cache>/<key>/`` holding
``dynamics.ckpt`` (the final model), ``partial.ckpt`` (stage 1's resumable state while it trains) and
``lock`` (``flock``-ed by the one process training the entry). Runs share the cache of their run root
(``dynamics_cache_dir``).
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mopo_lightning.dynamics.module import DynamicsModule
from mopo_lightning.files import file_state, sha256_file, write_text_atomic

FINGERPRINT_VERSION = 3
"""Bumped when the fingerprint's fields or the checkpoint's layout change (2: ``dynamics.max_seconds`` became
``max_time``, ``early_stopping.num_updates`` became ``epochs``; 3: ``torch`` and ``code_version`` added)."""
DYNAMICS_CODE_VERSION = 1
"""Bump when a change to stage 1's code changes the trained weights for the same settings and torch (the ensemble,
its loss or normaliser, bootstrap batches, early stopping, the holdout split, the data reader): cached models of
the old code are then retrained, never served. A constant rather than a hash of the source: a hash would retrain
every cache entry on a comment or refactor; the cost is that a numeric change must remember to bump it."""
STAGE1_DATA_KEYS = ("task", "mode", "seed", "holdout_ratio", "max_holdout", "dynamics_batch_size", "max_rows")
"""DataModule hparams that shape stage 1."""
_SKIPPED_DYNAMICS_KEYS = ("obs_dim", "act_dim")  # given by data.task
DATASET_KEYS = ("path", "dataset", "data_dir")
"""DataModule hparams that choose which bytes are read (the fingerprint holds those bytes' SHA-256)."""
CONFIG_KEYS = ("seed_everything", *(f"data.{k}" for k in (*DATASET_KEYS, *STAGE1_DATA_KEYS)), "collect.",
               "dynamics.")
"""``fit`` config keys that can change the fingerprint (``data.seed`` is linked from ``seed_everything``); a
trailing dot names a whole group. The sweep's trial order reads this list, so the two cannot drift apart."""

_HASHES: dict[tuple, str] = {}  # files.file_state -> sha256, this process


CACHE_NAME = ".dynamics_cache"


def dynamics_cache_dir(run_root: str | Path, cache: str | Path | None = None) -> Path:
    """The stage-1 cache of the runs under ``run_root``: ``cache`` when given, else ``<run_root>/.dynamics_cache``
    (``fit``'s ``--dynamics_cache`` default; a sweep's trials have the sweep directory as their run root)."""
    return Path(cache) if cache else Path(run_root) / CACHE_NAME


def dataset_sha256(path: str | Path, cache_dir: str | Path | None = None,
                   loaded: tuple | None = None) -> str:
    """SHA-256 of the dataset file, computed once per file state (path, size, mtime, inode, ctime).

    ``loaded``: the ``files.file_state`` the file had when its rows were read; a file written or replaced
    since then raises ``DatasetError``, so a model is never labelled with bytes it was not trained on.
    Remembered in this process and, with ``cache_dir``, in ``<cache_dir>/dataset_hashes/`` so that another
    process (or a later run) does not read a 2 GB file again.
    """
    key = file_state(path)
    if loaded is not None and tuple(loaded) != key:
        from mopo_lightning.data.errors import DatasetError

        raise DatasetError(f"{key[0]} changed after this run read it (size, mtime or inode differ); another "
                           "process wrote or replaced it: run again once the file stays put")
    if key in _HASHES:
        return _HASHES[key]
    record = None
    if cache_dir is not None:
        name = hashlib.sha256(key[0].encode()).hexdigest()[:16]
        record = Path(cache_dir) / "dataset_hashes" / f"{name}.json"
        try:
            saved = json.loads(record.read_text())
            if saved["state"] == list(key):
                _HASHES[key] = saved["sha256"]
                return saved["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = sha256_file(key[0])
    if file_state(path) != key:
        from mopo_lightning.data.errors import DatasetError

        raise DatasetError(f"{key[0]} changed while it was hashed; another process is writing it")
    _HASHES[key] = digest
    if record is not None:
        write_text_atomic(record, json.dumps({"state": list(key), "sha256": digest}) + "\n")
    return digest


def _canonical(value: Any) -> Any:
    """JSON-plain value: tuples -> lists, integral floats -> ints (120 and 120.0 are one setting)."""
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return str(value)


def dynamics_fingerprint(
    dataset_sha: str, data_hparams: Mapping[str, Any], dynamics_hparams: Mapping[str, Any]
) -> dict[str, Any]:
    """The flat fingerprint dict: ``version``, ``torch``, ``code_version``, ``data.sha256``, ``data.<key>``,
    ``dynamics.<key>``."""
    signature = inspect.signature(DynamicsModule.__init__).parameters
    defaults = {k: p.default for k, p in signature.items() if p.default is not inspect.Parameter.empty}
    unknown = set(dynamics_hparams) - set(signature)
    if unknown:
        raise TypeError(f"not DynamicsModule hyper-parameters: {sorted(unknown)}")
    dynamics = {**defaults, **dynamics_hparams}
    fields: dict[str, Any] = {"version": FINGERPRINT_VERSION, "torch": str(torch.__version__),
                              "code_version": DYNAMICS_CODE_VERSION, "data.sha256": dataset_sha}
    for key in STAGE1_DATA_KEYS:
        fields[f"data.{key}"] = _canonical(data_hparams[key])
    for key in sorted(dynamics):
        if key not in _SKIPPED_DYNAMICS_KEYS:
            fields[f"dynamics.{key}"] = _canonical(dynamics[key])
    return fields


def fingerprint_key(fingerprint: Mapping[str, Any]) -> str:
    """16 hex digits naming the fingerprint (its cache entry's directory)."""
    text = json.dumps(dict(fingerprint), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@contextmanager
def exclusive_lock(path: str | Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); block while another process holds it.

    ``on_wait`` is called once if the lock is busy. The kernel releases the lock when its holder dies, so a
    killed trainer never leaves an entry locked.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
