"""The loader refuses broken files with a DatasetError naming the file and the fault.

Bad files are copies of a collected file, corrupted with h5py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.data.d4rl_download import resolve_dataset
from mopo_lightning.data.errors import DatasetError
from mopo_lightning.data.summary import summarize
from mopo_lightning.data.validation import MAX_ABS_VALUE


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
    "half_terminal": (
        replace("terminals", lambda x: with_nan(7, 0.5)(x.astype(np.float32))), "terminals must be exactly 0 or 1"
    ),
    "half_timeout": (
        replace("timeouts", lambda x: with_nan(4, 0.5)(x.astype(np.float32))),
        "timeouts must be exactly 0 or 1 (1 rows are not, first row 4",
    ),
    "two_terminal": (replace("terminals", lambda x: with_nan(9, 2)(x.astype(np.int64))), "terminals must be"),
    "huge_observations": (
        replace("observations", with_nan(17, 1e30)),
        f"observations hold values beyond +-{MAX_ABS_VALUE:g}, which no MuJoCo run reaches (1 rows, first row 17",
    ),
    "huge_next_observations": (replace("next_observations", with_nan(2, -2e6)), "next_observations hold values beyond"),
    "huge_rewards": (replace("rewards", with_nan(5, 1e7)), "rewards hold values beyond"),
    "huge_actions": (replace("actions", with_nan(5, 1e9)), "actions hold values beyond"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_refuses_broken_file(hopper_flags, tmp_path, case):
    """fit (both modes) and `data info` refuse the file with the same one-line message."""
    edit, fault = CASES[case]
    path = corrupt(hopper_flags, tmp_path / f"{case}.hdf5", edit)
    messages = []
    for mode in ("transitions", "qlearning"):
        with pytest.raises(DatasetError) as info:
            load_dataset(path, "hopper", mode=mode)
        messages.append(str(info.value))
    with pytest.raises(DatasetError) as info:
        summarize(path, "hopper")
    messages.append(str(info.value))
    assert len(set(messages)) == 1, messages
    message = messages[0]
    assert str(path) in message and fault in message and "\n" not in message, message


def test_accepts_boundary_values(hopper_flags, tmp_path):
    """Flags as 0.0/1.0 floats and values right at the bound are real data, not faults."""

    def edit(f: h5py.File) -> None:
        replace("terminals", lambda x: x.astype(np.float64))(f)
        replace("timeouts", lambda x: x.astype(np.uint8))(f)
        replace("actions", with_nan(3, 1.02))(f)  # slightly outside the action box: MuJoCo clamps it
        replace("rewards", with_nan(3, MAX_ABS_VALUE))(f)

    path = corrupt(hopper_flags, tmp_path / "boundary.hdf5", edit)
    td = load_dataset(path, "hopper")
    assert td.batch_size[0] == 1000 and float(td["action"][3, 0]) == pytest.approx(1.02)
    assert summarize(path, "hopper")["transitions"] == 1000


def test_refuses_wrong_task(hopper_flags):
    """`data info --task walker2d` on a hopper file refuses like fit, instead of printing walker2d scores."""
    fault = r"observations have shape \(1000, 11\), task walker2d needs \[N, 17\]"
    with pytest.raises(DatasetError, match=fault):
        load_dataset(hopper_flags, "walker2d")
    with pytest.raises(DatasetError, match=fault):
        summarize(hopper_flags, "walker2d")


@pytest.mark.parametrize("content", [b"hello", b"\x89HDF\r\n\x1a\n" + b"\0" * 40, b""])
def test_refuses_non_hdf5_file(tmp_path, content):
    """Text, a cut HDF5 header and an empty file: one line naming the file, from fit and `data info`."""
    path = tmp_path / "not_hdf5.hdf5"
    path.write_bytes(content)
    for read in (lambda: load_dataset(path, "hopper"), lambda: summarize(path, "hopper"), lambda: summarize(path)):
        with pytest.raises(DatasetError, match="not a readable HDF5 file") as info:
            read()
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_refuses_truncated_hdf5_file(hopper_flags, tmp_path):
    path = tmp_path / "cut.hdf5"
    path.write_bytes(hopper_flags.read_bytes()[:20_000])
    for read in (lambda: load_dataset(path, "hopper"), lambda: summarize(path, "hopper")):
        with pytest.raises(DatasetError) as info:
            read()
        assert str(path) in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_refuses_directory(tmp_path):
    """`--data.path some_dir/`: one line, not an IsADirectoryError traceback."""
    folder = tmp_path / "some_dir"
    folder.mkdir()
    for read in (lambda: resolve_dataset(f"{folder}/"), lambda: resolve_dataset(folder),
                 lambda: load_dataset(folder, "hopper"), lambda: summarize(folder, "hopper")):
        with pytest.raises(DatasetError, match="is a directory, not an HDF5 file") as info:
            read()
        assert str(folder) in str(info.value)


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
