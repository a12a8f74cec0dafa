"""D4RL-schema HDF5 files: check, read whole arrays, write.

We read with h5py rather than TorchRL's ``D4RLExperienceReplay`` (which needs its own memmap copy and
zeroes next observations on done rows) or ``PersistentTensorDict.from_h5`` (which fails on D4RL's
string metadata). Only the needed keys are read, each whole at once.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from mopo_lightning.data.errors import DatasetError, one_line
from mopo_lightning.files import atomic_path

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")


def check_file(path: str | Path) -> Path:
    """``path`` if it is an existing HDF5 file; else one-line ``DatasetError`` (directory, missing, not HDF5)."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory, not an HDF5 file")
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path}: not a readable HDF5 file (no HDF5 signature: corrupt, cut or another format)")
    return path


def read_arrays(
    path: str | Path, keys: tuple[str, ...] = REQUIRED_KEYS, optional: tuple[str, ...] = ()
) -> dict:
    """Whole arrays for ``keys`` (required) and ``optional`` keys that exist; same first dimension."""
    path = check_file(path)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DatasetError(f"{path}: not a readable HDF5 file ({one_line(err)})") from None
    with f:
        missing = [k for k in keys if k not in f]
        if missing:
            raise DatasetError(f"{path}: missing key(s) {', '.join(missing)} (D4RL needs {', '.join(keys)})")
        try:
            data = {k: f[k][()] for k in keys + tuple(k for k in optional if k in f)}
        except (OSError, KeyError, TypeError, AttributeError) as err:  # a truncated file, a group for a dataset
            raise DatasetError(f"{path}: unreadable dataset ({one_line(err)})") from None
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in data.items()}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f"{path}: length mismatch between keys: {lengths}")
    return data


def write_hdf5(path: str | Path, arrays: dict[str, np.ndarray], metadata: dict[str, str | int | float]) -> Path:
    """Write arrays and ``metadata/*`` scalars in D4RL's schema to ``path``, atomically."""
    path = Path(path)
    # track_times=False keeps the bytes reproducible: same arguments, same file.
    with atomic_path(path, tag="part") as tmp, h5py.File(tmp, "w", track_order=True) as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value, track_times=False)
        for key, value in metadata.items():
            f.create_dataset(f"metadata/{key}", data=value, track_times=False)
    return path
