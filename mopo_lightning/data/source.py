"""Which source a dataset name means, decided by its form alone (``dataset_source``, the one rule).

- ``"minari"`` also for a Minari dataset on disk: a directory holding ``data/metadata.json`` (a dataset in
  a Minari store, ``~/.minari/datasets/mujoco/hopper/medium-v0``), its ``data`` directory, or a file in
  that directory (``.../data/main_data.hdf5``, what ``OfflineDataset.file()`` returns for it).
- ``"file"``: any other explicit path. Anything that exists on disk (file or directory), anything ending
  in ``.hdf5``/``.h5``, anything starting with ``/``, ``.``, or ``~``.
- ``"minari"``: a Minari dataset id, ``namespace/name/quality-vN`` (at least one ``/``, a ``-vN`` version
  at the end, only letters, digits, ``_ . -`` between the slashes), e.g. ``mujoco/hopper/medium-v0``;
  read through the ``minari`` package (``data/minari.py``) from the local Minari store or downloaded.
- ``"d4rl"``: a D4RL name, ``env-kind-vN`` without any ``/``, e.g. ``walker2d-medium-replay-v2``;
  looked up in the D4RL cache or downloaded (``data/d4rl_download.py``).

Any other string with a ``/`` is taken as a path (and is then reported missing).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

Source = Literal["file", "d4rl", "minari"]

MINARI_ID = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*/[A-Za-z0-9_.\-]+-v\d+")
"""``namespace/(env/)name-vN``: the form of Minari's ids (``minari.dataset.minari_dataset.DATASET_ID_RE``)."""


METADATA_FILE = "metadata.json"


def minari_data_dir(path: str | Path) -> Path | None:
    """The ``data`` directory of a Minari dataset on disk that ``path`` names (module docstring), else None."""
    path = Path(path).expanduser()
    candidates = (path / "data", path) if path.is_dir() else (path.parent,) if path.parent.name == "data" else ()
    for candidate in candidates:
        if (candidate / METADATA_FILE).is_file():
            return candidate
    return None


def dataset_source(name_or_path: str | Path) -> Source:
    """``"file"``, ``"minari"`` or ``"d4rl"`` for a dataset name or path, by its form (module docstring)."""
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if path.exists() and minari_data_dir(path) is not None:
        return "minari"
    if (isinstance(name_or_path, Path) or path.exists() or path.suffix.lower() in (".hdf5", ".h5")
            or text.startswith(("/", ".", "~"))):
        return "file"
    if MINARI_ID.fullmatch(text):
        return "minari"
    if "/" in text or "\\" in text:
        return "file"
    return "d4rl"
