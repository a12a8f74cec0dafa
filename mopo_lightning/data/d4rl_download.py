"""Where a D4RL dataset name lives: its public URL, its file in D4RL's cache, and the download.

The URLs are D4RL's own (``d4rl/infos.py``): the locomotion v1/v2 files follow one pattern, the v0 files
do not, so those are listed. Only the MuJoCo locomotion names are known, the ones a task can load; any other
name is one ``UnknownDataset`` line (exit 2) with the closest known name (``hoppr-medium-v2``: hopper-medium-v2).
"""

from __future__ import annotations

import http.client
import os
import urllib.request
from pathlib import Path

from mopo_lightning.data.errors import DatasetDownloadError, DatasetError, UnknownDataset
from mopo_lightning.files import atomic_path
from mopo_lightning.guards import did_you_mean
from mopo_lightning.progress import progress

D4RL_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
LOCOMOTION_ENVS = ("hopper", "walker2d", "halfcheetah", "ant")
KINDS = ("random", "medium", "expert", "medium-replay", "full-replay", "medium-expert")
"""D4RL's locomotion v1/v2 datasets per env (``d4rl/infos.py``)."""

V0_FILES = {
    "halfcheetah-random-v0": "halfcheetah_random",
    "halfcheetah-medium-v0": "halfcheetah_medium",
    "halfcheetah-expert-v0": "halfcheetah_expert",
    "halfcheetah-medium-replay-v0": "halfcheetah_mixed",
    "halfcheetah-medium-expert-v0": "halfcheetah_medium_expert",
    "walker2d-random-v0": "walker2d_random",
    "walker2d-medium-v0": "walker2d_medium",
    "walker2d-expert-v0": "walker2d_expert",
    "walker2d-medium-replay-v0": "walker_mixed",
    "walker2d-medium-expert-v0": "walker2d_medium_expert",
    "hopper-random-v0": "hopper_random",
    "hopper-medium-v0": "hopper_medium",
    "hopper-expert-v0": "hopper_expert",
    "hopper-medium-replay-v0": "hopper_mixed",
    "hopper-medium-expert-v0": "hopper_medium_expert",
    "ant-random-v0": "ant_random",
    "ant-medium-v0": "ant_medium",
    "ant-expert-v0": "ant_expert",
    "ant-medium-replay-v0": "ant_mixed",
    "ant-medium-expert-v0": "ant_medium_expert",
    "ant-random-expert-v0": "ant_random_expert",
}
"""D4RL's v0 locomotion files (``gym_mujoco/<file>.hdf5``), whose names follow no pattern."""
D4RL_NAMES = frozenset(V0_FILES) | {f"{env}-{kind}-{version}" for env in LOCOMOTION_ENVS for kind in KINDS
                                    for version in ("v1", "v2")}
"""Every D4RL MuJoCo locomotion name a task can load."""


def default_data_dir() -> Path:
    """D4RL's convention: ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets``."""
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets")).expanduser()


def dataset_url(name: str) -> str:
    """Public URL of a D4RL dataset name such as ``walker2d-medium-replay-v2`` (``D4RL_NAMES``)."""
    key = name.strip().lower()
    if key in V0_FILES:
        return f"{D4RL_URL}/gym_mujoco/{V0_FILES[key]}.hdf5"
    if key in D4RL_NAMES:  # v1/v2: gym_mujoco_v2/walker2d_medium_replay-v2.hdf5
        env, _, rest = key.partition("-")
        kind, _, version = rest.rpartition("-")
        return f"{D4RL_URL}/gym_mujoco_{version}/{env}_{kind.replace('-', '_')}-{version}.hdf5"
    raise UnknownDataset(
        f"{name}: not a known D4RL dataset name{did_you_mean(key, D4RL_NAMES)}; known: ENV-KIND-v2 (or -v1, "
        f"-v0) with ENV one of {', '.join(LOCOMOTION_ENVS)} and KIND one of {', '.join(KINDS)}; "
        "or pass --data.path FILE"
    )


def resolve_dataset(
    name_or_path: str | Path, data_dir: str | Path | None = None, download: bool = True
) -> Path:
    """The local file for an explicit path or a D4RL name, downloading a missing D4RL file.

    A name is looked up under its URL's file name (``walker2d_medium_replay-v2.hdf5``) in ``data_dir``
    (default: ``default_data_dir()``), so files D4RL itself cached are found.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        raise DatasetError(f"{candidate}: is a directory, not an HDF5 file")
    text = str(name_or_path)
    if candidate.suffix in (".hdf5", ".h5") or os.sep in text:
        raise DatasetError(f"{candidate}: no such file")
    url = dataset_url(text)
    target = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    target = target / url.rsplit("/", 1)[-1]
    if target.is_file():
        return target
    if not download:
        raise DatasetDownloadError(
            f"{text}: not found at {target} and downloads are off; fetch {url} there, "
            "or pass --data.path FILE"
        )
    return download_file(url, target)


def download_file(url: str, dest: str | Path, quiet: bool = False, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` through a temporary file renamed into place only when complete."""
    dest = Path(dest)
    try:
        with atomic_path(dest, tag="part") as tmp, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            with open(tmp, "wb") as out, progress(total, f"download {dest.name}", quiet, unit="bytes") as advance:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    advance(len(chunk))
            if total is not None and done != total:
                raise OSError(f"transfer cut after {done} of {total} bytes")
    except (OSError, http.client.HTTPException, ValueError) as err:
        # URLError and timeouts are OSErrors; IncompleteRead an HTTPException; bad URLs ValueErrors
        raise DatasetDownloadError(
            f"could not download {url} to {dest} ({type(err).__name__}: {err}); "
            "download it there yourself, or pass --data.path FILE"
        ) from None
    return dest
