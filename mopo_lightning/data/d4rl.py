"""Locate, download, read and validate D4RL HDF5 files into a TensorDict of transitions.

Keys follow TorchRL (``docs/interfaces.md``): ``observation``, ``action``, ``("next", "observation")``,
``("next", "reward")`` [N, 1], ``("next", "terminated" | "truncated" | "done")`` [N, 1] bool.

Two modes (MOPO reference, section 6):

- ``"transitions"`` (default): every row, with the file's ``next_observations``; time-limit rows are
  kept as non-terminal (``truncated`` True). Files without ``next_observations`` (D4RL v0) fall back
  to the ``"qlearning"`` rows, since ``observations[i + 1]`` is then the only next observation.
  Without a ``timeouts`` key, ``truncated`` is all False.
- ``"qlearning"``: exactly D4RL's ``qlearning_dataset`` (d4rl/__init__.py, terminate_on_end=False):
  row i in 0..N-2 gets next observation ``observations[i + 1]``; rows at a time limit are dropped
  (``timeouts[i]``, or without that key step 999 of D4RL's episode counter, see ``infer_timeouts``);
  terminal rows are kept; the last row is never emitted; ``truncated`` is all False.

Validation (``validate``, shared by ``load_dataset`` and ``data info``) refuses, with one line naming the
file and the fault: a path that is a directory, missing or not HDF5; missing keys; length mismatches;
sizes that do not fit the task; NaN or inf; ``terminals``/``timeouts`` that are not exactly 0/1 (bool, or
numbers 0 and 1: 0.5 is refused, not read as True); and magnitudes no MuJoCo run produces:
``|x| > MAX_ABS_VALUE`` (1e6) in observations, next observations, rewards or actions. The bound is loose
on purpose: the D4RL locomotion states are O(10) (Hopper and Walker2d clip velocities to +-10, contact
forces are excluded), rewards per step O(10), so only corrupt data (1e30, uninitialised memory) reaches it.
Actions get the same bound, not [-1, 1]: MuJoCo clamps controls to the actuator range, so a file whose
actions slightly exceed the action box (float rounding, unclipped behaviour noise) still describes real
transitions and is accepted.

A variant task (``Task.relabel``, e.g. ``halfcheetah-jump``) gets its rewards recomputed from each row's
``actions`` and ``infos/*`` (MOPO reference section 8); everything else is read as for its base task.

We read with h5py rather than TorchRL's ``D4RLExperienceReplay`` (which needs its own memmap copy and
zeroes next observations on done rows) or ``PersistentTensorDict.from_h5`` (which fails on D4RL's
string metadata). Only the needed keys are read, each whole at once.
"""

from __future__ import annotations

import http.client
import importlib.util
import os
import urllib.request
from pathlib import Path

import h5py
import numpy as np
import torch
from tensordict import TensorDict

from mopo_lightning.files import atomic_path
from mopo_lightning.progress import progress
from mopo_lightning.tasks import Task, get_task
from mopo_lightning.transitions import transitions

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
MODES = ("transitions", "qlearning")
D4RL_MAX_EPISODE_STEPS = 1000
"""``env._max_episode_steps`` of every D4RL MuJoCo task; drives the step-999 rule."""
MAX_ABS_VALUE = 1e6
"""Largest magnitude accepted in observations, next observations, rewards and actions (module docstring)."""
BOUNDED_KEYS = ("observations", "actions", "rewards", "next_observations")
FLAG_KEYS = ("terminals", "timeouts")


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and the fault."""


class DatasetDownloadError(DatasetError):
    """A D4RL file that is neither on disk nor downloadable (offline, bad URL, cut transfer)."""


# ---------------------------------------------------------------- locating and downloading


def default_data_dir() -> Path:
    """D4RL's convention: ``$D4RL_DATASET_DIR``, else ``~/.d4rl/datasets``."""
    return Path(os.environ.get("D4RL_DATASET_DIR", Path.home() / ".d4rl" / "datasets")).expanduser()


def _torchrl_table() -> dict[str, str]:
    """TorchRL's ``D4RL_DATASETS`` table, read from its file without importing torchrl (~4 s)."""
    try:
        spec = importlib.util.find_spec("torchrl")
        root = Path(next(iter(spec.submodule_search_locations)))
        mspec = importlib.util.spec_from_file_location(
            "_torchrl_d4rl_infos", root / "data/datasets/d4rl_infos.py"
        )
        module = importlib.util.module_from_spec(mspec)
        mspec.loader.exec_module(module)
        return dict(module.D4RL_DATASETS)
    except (ImportError, OSError, AttributeError, TypeError, StopIteration):
        # torchrl missing or its table moved: the locomotion URL pattern below still works
        return {}


def dataset_url(name: str) -> str:
    """Public URL of a D4RL dataset name such as ``walker2d-medium-replay-v2``."""
    key = name.strip().lower()
    table = _torchrl_table()
    if key in table:
        return table[key]
    # D4RL's locomotion v1/v2 URLs follow one pattern: gym_mujoco_v2/walker2d_medium_replay-v2.hdf5
    env, _, rest = key.partition("-")
    kind, _, version = rest.rpartition("-")
    if env in ("hopper", "walker2d", "halfcheetah", "ant") and kind and version in ("v1", "v2"):
        base = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
        return f"{base}/gym_mujoco_{version}/{env}_{kind.replace('-', '_')}-{version}.hdf5"
    raise DatasetError(
        f"{name}: not a known D4RL dataset name (e.g. hopper-medium-v2); or pass --data.path FILE"
    )


def resolve_dataset(
    name_or_path: str | Path, data_dir: str | Path | None = None, download: bool = True
) -> Path:
    """The local file for an explicit path or a D4RL name, downloading a missing D4RL file.

    A name is looked up under its standard file name (the URL's, e.g. ``walker2d_medium_replay-v2.hdf5``)
    in ``data_dir`` (default: ``default_data_dir()``), as D4RL itself caches files.
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


# ---------------------------------------------------------------- reading and validating


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
        raise DatasetError(f"{path}: not a readable HDF5 file ({_one_line(err)})") from None
    with f:
        missing = [k for k in keys if k not in f]
        if missing:
            raise DatasetError(f"{path}: missing key(s) {', '.join(missing)} (D4RL needs {', '.join(keys)})")
        try:
            data = {k: f[k][()] for k in keys + tuple(k for k in optional if k in f)}
        except (OSError, KeyError, TypeError, AttributeError) as err:  # a truncated file, a group for a dataset
            raise DatasetError(f"{path}: unreadable dataset ({_one_line(err)})") from None
    lengths = {k: (v.shape[0] if v.ndim else None) for k, v in data.items()}
    if len(set(lengths.values())) != 1:
        raise DatasetError(f"{path}: length mismatch between keys: {lengths}")
    return data


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def read_validated(path: str | Path, task: str | Task) -> dict:
    """The arrays ``load_dataset`` uses from ``path``, validated for ``task`` (see ``validate``)."""
    task = get_task(task)
    extra = task.relabel.keys if task.relabel is not None else ()
    data = read_arrays(path, REQUIRED_KEYS, optional=("next_observations", "timeouts", *extra))
    validate(path, data, task)
    return data


def validate(path: str | Path, data: dict, task: str | Task) -> None:
    """Raise a one-line ``DatasetError`` naming ``path`` and the fault if ``data`` cannot serve ``task``.

    The one validation behind ``load_dataset`` (``fit``) and ``summarize`` (``data info``): emptiness,
    sizes against the task, a variant task's reward inputs, NaN/inf, magnitudes beyond ``MAX_ABS_VALUE``
    and flags that are not exactly 0/1.
    """
    task = get_task(task)
    obs, act = data["observations"], data["actions"]
    n = obs.shape[0]
    if n == 0:
        raise DatasetError(f"{path}: empty dataset (0 rows)")
    if obs.ndim != 2 or obs.shape[1] != task.obs_dim:
        raise DatasetError(
            f"{path}: observations have shape {obs.shape}, task {task.name} needs [N, {task.obs_dim}]"
        )
    if act.ndim != 2 or act.shape[1] != task.act_dim:
        raise DatasetError(
            f"{path}: actions have shape {act.shape}, task {task.name} needs [N, {task.act_dim}]"
        )
    for key in ("rewards", *FLAG_KEYS):
        if key in data and data[key].size != n:
            raise DatasetError(f"{path}: {key} must hold one value per row, got shape {data[key].shape}")
    if "next_observations" in data and data["next_observations"].shape != obs.shape:
        raise DatasetError(
            f"{path}: next_observations have shape {data['next_observations'].shape}, not {obs.shape}"
        )
    if task.relabel is not None:
        _check_relabel_keys(path, data, task)
    for key in BOUNDED_KEYS:
        if key not in data:
            continue
        values = np.asarray(data[key])
        if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
            raise DatasetError(f"{path}: {key} must be real numbers, got dtype {values.dtype}")
        rows = values.reshape(n, -1)
        if not np.isfinite(rows).all():
            bad = int((~np.isfinite(rows)).any(1).sum())
            raise DatasetError(f"{path}: {key} hold NaN or inf values ({bad} rows)")
        beyond = (np.abs(rows) > MAX_ABS_VALUE).any(1)
        if beyond.any():
            first = int(np.flatnonzero(beyond)[0])
            raise DatasetError(
                f"{path}: {key} hold values beyond +-{MAX_ABS_VALUE:g}, which no MuJoCo run reaches "
                f"({int(beyond.sum())} rows, first row {first}: max |x| {np.abs(rows[first]).max():.3g})"
            )
    for key in FLAG_KEYS:
        if key not in data:
            continue
        values = np.asarray(data[key]).reshape(n)
        if values.dtype == np.bool_:
            continue
        if not np.issubdtype(values.dtype, np.number):
            raise DatasetError(f"{path}: {key} must be bool or 0/1 numbers, got dtype {values.dtype}")
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DatasetError(
                f"{path}: {key} must be exactly 0 or 1 ({int(bad.sum())} rows are not, "
                f"first row {first}: {values[first]!r})"
            )


def infer_timeouts(terminals: np.ndarray, max_episode_steps: int = D4RL_MAX_EPISODE_STEPS) -> np.ndarray:
    """D4RL's time-limit rule for files without ``timeouts``: a bool flag per row.

    D4RL's counter (qlearning_dataset): a row is final when ``episode_step == max_episode_steps - 1``;
    a final row resets the counter to 0; a kept terminal row resets it to 0 and then counts itself, so
    the episode after a terminal starts at 1 (it is cut one row earlier). Vectorised: a loop over
    terminals only, never over rows.
    """
    n, last, period = len(terminals), max_episode_steps - 1, max_episode_steps
    final = np.zeros(n, dtype=bool)
    start, s0 = 0, 0  # first row of the current stretch and its counter value
    for k in np.flatnonzero(terminals):
        s_k = s0 + (k - start)
        if s_k >= last and (s_k - last) % period == 0:
            continue  # this terminal is itself a final row: dropped, counter goes on periodically
        final[start + last - s0 : k + 1 : period] = True
        start, s0 = k + 1, 1
    final[start + last - s0 :: period] = True
    return final


def _flags(data: dict, key: str, n: int) -> np.ndarray:
    return np.asarray(data[key]).reshape(n).astype(bool) if key in data else np.zeros(n, dtype=bool)


def load_dataset(path: str | Path, task: str | Task, mode: str = "transitions") -> TensorDict:
    """Read and validate a D4RL-schema HDF5 file into a transition TensorDict of batch size [N].

    Raises a one-line ``DatasetError`` naming the file and the fault for everything ``validate`` refuses
    (and for a file that is missing, a directory, not HDF5, or lacks keys).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    path, task = Path(path), get_task(task)
    data = read_validated(path, task)
    obs, act = data["observations"], data["actions"]
    n = obs.shape[0]

    terminals = _flags(data, "terminals", n)
    rewards = np.asarray(data["rewards"], dtype=np.float32).reshape(n)
    if task.relabel is not None:
        rewards = relabel_rewards(path, data, task)
    if mode == "transitions" and "next_observations" in data:
        rows = slice(None)
        next_obs = data["next_observations"]
        truncated = _flags(data, "timeouts", n)
    else:  # D4RL qlearning_dataset; also the transitions fallback without next_observations
        final = _flags(data, "timeouts", n) if "timeouts" in data else infer_timeouts(terminals)
        rows = np.flatnonzero(~final[: n - 1])
        next_obs = obs[rows + 1]
        truncated = np.zeros(n, dtype=bool)
        if rows.size == 0:
            raise DatasetError(f"{path}: empty dataset (no rows left in qlearning mode)")

    return transitions(
        observation=_f32(obs[rows]),
        action=_f32(act[rows]),
        next_observation=_f32(next_obs),
        reward=_f32(rewards[rows]),
        terminated=torch.from_numpy(terminals[rows]),
        truncated=torch.from_numpy(truncated[rows]),
    )


def relabel_rewards(path: Path, data: dict, task: Task) -> np.ndarray:
    """A variant task's rewards [N] (float32), recomputed from each row's ``actions`` and ``infos/*``."""
    _check_relabel_keys(path, data, task)
    rewards = task.relabel(data).astype(np.float32)
    if not np.isfinite(rewards).all():
        raise DatasetError(f"{path}: relabelled {task.name} rewards hold NaN or inf values")
    return rewards


def _check_relabel_keys(path: str | Path, data: dict, task: Task) -> None:
    missing = [k for k in task.relabel.keys if k not in data]
    if missing:
        raise DatasetError(
            f"{path}: task {task.name} relabels rewards from {', '.join(missing)}, which the file lacks; "
            "collect it with `mopo-lightning collect` (it records them)"
        )


def _f32(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def episode_ends(path: str | Path) -> tuple[np.ndarray, dict]:
    """Episode-end flags per row (terminals | timeouts, or D4RL's step rule) and the raw arrays."""
    data = read_arrays(path, ("rewards", "terminals"), optional=("timeouts",))
    n = data["rewards"].shape[0]
    terminals = _flags(data, "terminals", n)
    timeouts = _flags(data, "timeouts", n) if "timeouts" in data else infer_timeouts(terminals)
    return terminals | timeouts, {**data, "terminals": terminals, "timeouts": timeouts}
