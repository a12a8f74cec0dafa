"""A corpus of bad inputs: each ends with one line, the same exit code per kind of fault, and no file changed.

Exit codes (``commands.cli.ExitCode``): 2 bad usage or config, 3 bad data, 4 bad checkpoint, 5 file-system fault.
The commands run in-process (``commands.cli.main``), in a work directory holding one finished tiny run and its data;
the whole directory is fingerprinted (size, mtime, bytes) before and after each case.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import collected_dataset, run_cli
from test_cli import QUICKSTART, TINY

from mopo_lightning.commands.cli import main

RUN = "done"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A finished tiny run ``checkpoints/done``, its data, bad copies of the data and a few odd files."""
    cwd = tmp_path_factory.mktemp("bad_inputs")
    good = cwd / "hopper.hdf5"
    shutil.copyfile(collected_dataset("hopper", 2_000, seed=0), good)
    run_cli(*fit(), cwd=cwd)
    for name, key, change in (("huge.hdf5", "observations", lambda a: a.__setitem__((5, 2), 1e30)),
                              ("half.hdf5", "terminals", None)):
        path = cwd / name
        shutil.copyfile(good, path)
        with h5py.File(path, "r+") as f:
            if change is not None:
                data = f[key][()]
                change(data)
                f[key][...] = data
            else:  # terminals of 0.5: not a flag
                data = f[key][()].astype(np.float32)
                data[3] = 0.5
                del f[key]
                f[key] = data
    (cwd / "datadir.hdf5").mkdir()
    (cwd / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    (cwd / "a_file").write_text("not a directory\n")
    return cwd


def fingerprint(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and link below ``root``: its size and content hash (links: their target)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = (0, str(path.readlink()))
        elif path.is_file():
            out[str(path.relative_to(root))] = (path.stat().st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def fit(*extra: str) -> list[str]:
    """``fit`` on the good data into the finished run; a later ``--run_name`` in ``extra`` wins."""
    # a D4RL name beside the path, as the paper configs have: the path wins, and results.json must say so
    return ["fit", "--config", str(QUICKSTART), "--data.dataset", "hopper-medium-replay-v2", "--data.path",
            "hopper.hdf5", "--run_name", RUN, *TINY, *extra]


def corrupt_last(root: Path) -> list[str]:
    """A copy of the finished run whose newest epoch checkpoint (last.ckpt's target) is truncated."""
    shutil.copytree(root / "checkpoints" / RUN, root / "checkpoints" / "broken", symlinks=True)
    last = root / "checkpoints" / "broken" / "sac" / "last.ckpt"
    target = last.resolve()
    target.write_bytes(target.read_bytes()[:1000])
    return fit("--run_name", "broken", "--ckpt_path", "last")


def truncated_dynamics(root: Path) -> list[str]:
    shutil.copytree(root / "checkpoints" / RUN, root / "checkpoints" / "dyn", symlinks=True)
    path = root / "checkpoints" / "dyn" / "dynamics.ckpt"
    path.write_bytes(path.read_bytes()[:5000])
    return fit("--run_name", "dyn", "--ckpt_path", "last")


CASES = {
    # name: (argv or a function preparing the case and returning argv, exit code, text in the line)
    "typo key": (fit("--data.pathh", "x"), 2, "unknown option --data.pathh"),
    "real_ratio out of range": (fit("--run_name", "rr", "--mopo.real_ratio", "2"), 2,
                                "mopo.real_ratio must be in [0, 1]"),
    "negative max_epochs": (fit("--trainer.max_epochs", "-5", "--run_name", "neg"), 2, "max_epochs"),
    "renamed key": (fit("--data.penalty", "aleatoric"), 2, "`data.penalty` was renamed to `mopo.penalty_kind`"),
    "unknown penalty kind": (fit("--run_name", "pk", "--mopo.penalty_kind", "bogus"), 2, "mopo.penalty_kind"),
    "unknown task": (fit("--run_name", "tk", "--data.task", "hoper"), 2, "unknown task 'hoper' (did you mean hopper?)"),
    "unknown penalty units": (fit("--run_name", "pu", "--mopo.penalty_units", "median"), 2, "mopo.penalty_units"),
    "same run twice": (fit(), 2, "already holds a run: resume it with --ckpt_path last"),
    "resume, other config": (fit("--ckpt_path", "last", "--mopo.penalty_coef", "3"), 2,
                             "mopo.penalty_coef (1.0 -> 3.0)"),
    "missing --ckpt_path": (fit("--run_name", "new", "--ckpt_path", "/nonexistent.ckpt"), 4, "no such file"),
    "random-bytes --ckpt_path": (fit("--run_name", "new", "--ckpt_path", "random.ckpt"), 4, "corrupt checkpoint"),
    "corrupt last.ckpt target": (corrupt_last, 4, "the newest good one is"),
    "truncated dynamics.ckpt": (truncated_dynamics, 4, "corrupt checkpoint"),
    "observations of 1e30": (fit("--run_name", "huge", "--data.path", "huge.hdf5"), 3, "huge.hdf5"),
    "terminals of 0.5": (fit("--run_name", "half", "--data.path", "half.hdf5"), 3, "half.hdf5"),
    "directory as data file": (fit("--run_name", "dir", "--data.path", "datadir.hdf5"), 3, "is a directory"),
    "mistyped path, quickstart": (fit("--run_name", "typo", "--data.path", "hoper.hdf5"), 3,
                                  "hoper.hdf5: no such file"),
    "data does not fit the task": (fit("--run_name", "w", "--data.task", "walker2d"), 3, "needs [N, 17]"),
    "run root is a file": (fit("--run_name", "x", "--run_root", "a_file"), 5, "a_file"),
    "data info, huge values": (["data", "info", "huge.hdf5", "--task", "hopper"], 3, "huge.hdf5"),
    "data info, wrong task": (["data", "info", "hopper.hdf5", "--task", "walker2d"], 3, "needs [N, 17]"),
    "data info, 0.5 terminals": (["data", "info", "half.hdf5", "--task", "hopper"], 3, "half.hdf5"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_ends_with_one_line_and_changes_nothing(workdir, monkeypatch, capsys, case):
    argv, code, text = CASES[case]
    monkeypatch.chdir(workdir)
    if callable(argv):
        argv = argv(workdir)
    before = fingerprint(workdir)
    try:
        main(argv)
        status = 0
    except SystemExit as stop:
        status = stop.code
    _, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == code, err[-3000:]
    assert len(lines) == 1 and text in lines[0] and "Traceback" not in err, err[-3000:]
    assert fingerprint(workdir) == before


def test_results_name_the_data_that_was_used(workdir):
    """With both a D4RL name and a path, the path is read; results.json and the run name must not say otherwise."""
    import json

    results = json.loads((workdir / "checkpoints" / RUN / "results.json").read_text())
    assert results["dataset"] == "hopper.hdf5"
