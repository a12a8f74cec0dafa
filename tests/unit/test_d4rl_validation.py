"""The loader refuses broken files with a DatasetError naming the file and the fault.

Bad files are copies of a collected file, corrupted with h5py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from mopo_lightning.data.d4rl import DatasetError, load_dataset


def corrupt(src: Path, dst: Path, edit) -> Path:
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        edit(f)
    return dst


def replace(key: str, fn):
    def edit(f: h5py.File) -> None:
        value = fn(f[key][()])
        del f[key]
        f.create_dataset(key, data=value)

    return edit


def with_nan(row: int, value: float = np.nan):
    def fn(x: np.ndarray) -> np.ndarray:
        x = x.copy()
        x[row] = value
        return x

    return fn


def empty(f: h5py.File) -> None:
    for key in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations"):
        value = f[key][()][:0]
        del f[key]
        f.create_dataset(key, data=value)


CASES = {
    "missing_actions": (lambda f: f.__delitem__("actions"), "missing key(s) actions"),
    "missing_terminals": (lambda f: f.__delitem__("terminals"), "missing key(s) terminals"),
    "short_rewards": (replace("rewards", lambda x: x[:-1]), "length mismatch"),
    "short_timeouts": (replace("timeouts", lambda x: x[:-3]), "length mismatch"),
    "wide_observations": (
        lambda f: [
            replace(k, lambda x: np.hstack([x, x[:, :1]]))(f) for k in ("observations", "next_observations")
        ],
        "observations have shape (1000, 12), task hopper needs [N, 11]",
    ),
    "narrow_actions": (
        replace("actions", lambda x: x[:, :2]),
        "actions have shape (1000, 2), task hopper needs [N, 3]",
    ),
    "bad_next_observations": (
        replace("next_observations", lambda x: x[:, :5]),
        "next_observations have shape",
    ),
    "nan_observations": (
        replace("observations", with_nan(17)),
        "observations hold NaN or inf values (1 rows)",
    ),
    "nan_next_observations": (replace("next_observations", with_nan(3)), "next_observations hold NaN or inf"),
    "inf_rewards": (replace("rewards", with_nan(5, np.inf)), "rewards hold NaN or inf values"),
    "nan_actions": (replace("actions", with_nan(0)), "actions hold NaN or inf values"),
    "empty": (empty, "empty dataset"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refuses_broken_file(hopper_flags, tmp_path, case):
    edit, fault = CASES[case]
    path = corrupt(hopper_flags, tmp_path / f"{case}.hdf5", edit)
    for mode in ("transitions", "qlearning"):
        with pytest.raises(DatasetError) as info:
            load_dataset(path, "hopper", mode=mode)
        message = str(info.value)
        assert str(path) in message and fault in message, message


def test_refuses_wrong_task(hopper_flags):
    with pytest.raises(
        DatasetError, match=r"observations have shape \(1000, 11\), task walker2d needs \[N, 17\]"
    ):
        load_dataset(hopper_flags, "walker2d")


def test_refuses_non_hdf5_file(tmp_path):
    path = tmp_path / "not_hdf5.hdf5"
    path.write_text("hello")
    with pytest.raises(DatasetError, match="not a readable HDF5 file") as info:
        load_dataset(path, "hopper")
    assert str(path) in str(info.value)


def test_refuses_qlearning_file_with_no_rows_left(hopper_flags, tmp_path):
    """Every row a timeout: qlearning drops them all, and says so instead of returning nothing."""
    path = corrupt(
        hopper_flags, tmp_path / "all_timeouts.hdf5", replace("timeouts", lambda x: np.ones_like(x))
    )
    with pytest.raises(DatasetError, match="no rows left in qlearning mode"):
        load_dataset(path, "hopper", mode="qlearning")
    assert load_dataset(path, "hopper").batch_size[0] == 1000  # transitions mode keeps them


def test_string_metadata_loads(hopper_flags, tmp_path):
    """Real D4RL files carry string datasets such as metadata/algorithm; they must not get in the way."""

    def add_strings(f: h5py.File) -> None:
        f.create_dataset("metadata/algorithm", data="SAC")
        f.create_dataset("metadata/policy/nonlinearity", data=np.bytes_(b"relu"))
        f.create_dataset("infos/names", data=np.array(["a", "b"], dtype=h5py.string_dtype()))
        f.attrs["comment"] = "D4RL-like attributes"

    path = corrupt(hopper_flags, tmp_path / "strings.hdf5", add_strings)
    td = load_dataset(path, "hopper")
    assert td.batch_size[0] == 1000
    assert load_dataset(path, "hopper", mode="qlearning").batch_size[0] > 900


def test_float64_and_column_rewards_are_accepted(hopper_flags, tmp_path):
    """Older D4RL files store float64 arrays and sometimes rewards as [N, 1]; we convert to float32."""

    def widen(f: h5py.File) -> None:
        replace("observations", lambda x: x.astype(np.float64))(f)
        replace("rewards", lambda x: x.astype(np.float64)[:, None])(f)
        replace("terminals", lambda x: x.astype(np.float32))(f)

    path = corrupt(hopper_flags, tmp_path / "f64.hdf5", widen)
    td = load_dataset(path, "hopper")
    ref = load_dataset(hopper_flags, "hopper")
    assert (td == ref).all()
