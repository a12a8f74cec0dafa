"""Run identity: one configuration per run directory, resumes of the same run only, checkpoints checked first."""

from __future__ import annotations

import json

import pytest
import torch

from mopo_lightning.guards import CheckpointError, ConfigError
from mopo_lightning.training.run_dir import IDENTITY, RunDirectory, check_checkpoint, identity

CONFIG = {"data": {"task": "hopper"}, "mopo": {"penalty_coef": 1.0}, "dynamics": {"weight_decays": (1e-4, 2e-4)},
          "trainer": {"max_epochs": 4, "devices": 1}, "ckpt_path": None, "seed_everything": 0}


def _with(**changes):
    config = json.loads(json.dumps(CONFIG))
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        config[section][key] = value
    return config


def _ckpt(path, updates=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"sac_updates": torch.tensor(updates)}}, path)
    return path


def _started(path, config=CONFIG) -> RunDirectory:
    run = RunDirectory(path)
    run.prepare(config, None)
    run.start()
    return run


def test_prepare_changes_nothing_and_start_writes_the_identity(tmp_path):
    run = RunDirectory(tmp_path / "r")
    assert run.prepare(CONFIG, None) is None
    assert not run.path.exists()  # a start that fails on bad data leaves no run directory behind
    run.start()
    assert json.loads((run.path / IDENTITY).read_text()) == identity(CONFIG)
    (run.path / "results.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"already holds a run: resume it with --ckpt_path last, or .*--run_name"):
        run.prepare(CONFIG, None)
    assert (run.path / "results.json").read_text() == "{}"  # nothing changed


def test_overwrite_is_explicit_and_replaces_the_run_only_on_start(tmp_path):
    run = _started(tmp_path / "r")
    _ckpt(run.path / "sac" / "epoch0000.ckpt")
    again = RunDirectory(run.path)
    again.prepare(_with(mopo__penalty_coef=5.0), None, overwrite=True)
    assert (run.path / "sac" / "epoch0000.ckpt").exists()  # nothing deleted before the data is known good
    again.start()
    assert not (run.path / "sac").exists()
    assert json.loads((run.path / IDENTITY).read_text())["mopo.penalty_coef"] == 5.0


def test_resume_allows_budget_and_hardware_but_names_other_differences(tmp_path):
    run = _started(tmp_path / "r")
    assert run.prepare(_with(trainer__max_epochs=10, trainer__devices=2), "last") is None  # no SAC ckpt yet
    with pytest.raises(ConfigError, match=r"mopo\.penalty_coef \(1\.0 -> 5\.0\)"):
        run.prepare(_with(mopo__penalty_coef=5.0), "last")


def test_a_directory_of_other_files_is_neither_used_nor_deleted(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    (tmp_path / "empty").mkdir()
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match=r"holds files but no run \(no run.json\): choose another --run_name"):
            RunDirectory(tmp_path / "r").prepare(CONFIG, None, overwrite=overwrite)
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"
    assert RunDirectory(tmp_path / "empty").prepare(CONFIG, None) is None  # an empty directory is free


def test_resume_needs_a_run(tmp_path):
    with pytest.raises(ConfigError, match="holds no run to resume"):
        RunDirectory(tmp_path / "nothing").prepare(CONFIG, "last")
    assert not (tmp_path / "nothing").exists()


def test_last_resolves_to_the_linked_checkpoint(tmp_path):
    run = _started(tmp_path / "r")
    target = _ckpt(run.path / "sac" / "epoch0003.ckpt")
    run.last.symlink_to(target.name)
    assert run.prepare(CONFIG, "last") == str(run.last)


def test_corrupt_last_is_named_and_the_previous_good_one_offered(tmp_path):
    run = _started(tmp_path / "r")
    good = _ckpt(run.path / "sac" / "epoch0009.ckpt")
    bad = run.path / "sac" / "epoch0010.ckpt"
    bad.write_bytes(good.read_bytes()[: 200])  # truncated mid-write by something outside our atomic IO
    run.last.symlink_to(bad.name)
    with pytest.raises(CheckpointError, match=r"epoch0010\.ckpt: .*corrupt checkpoint.*newest good one is "
                                              r".*epoch0009\.ckpt: resume with --ckpt_path .*epoch0009\.ckpt"):
        run.prepare(CONFIG, "last")


@pytest.mark.parametrize("kind", ["missing", "directory", "random bytes", "not lightning"])
def test_explicit_checkpoint_is_checked_before_anything(tmp_path, kind):
    path = tmp_path / "x.ckpt"
    if kind == "directory":
        path.mkdir()
    elif kind == "random bytes":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    elif kind == "not lightning":
        torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="x.ckpt"):
        check_checkpoint(path)
    with pytest.raises(CheckpointError):
        RunDirectory(tmp_path / "r").prepare(CONFIG, str(path))
    assert not (tmp_path / "r").exists()


def test_run_location_and_path_spelling_do_not_define_a_run(tmp_path, monkeypatch):
    """A copied run resumes under its new name; ``data/x`` and its absolute name are the same file."""
    monkeypatch.chdir(tmp_path)
    config = _with(data__path="x.hdf5")
    config["run_name"] = "a"
    run = _started(tmp_path / "a", config)
    moved = json.loads(json.dumps(config))
    moved["run_name"], moved["data"]["path"] = "b", str(tmp_path / "x.hdf5")
    run.prepare(moved, "last")
    moved["data"]["path"] = "y.hdf5"
    with pytest.raises(ConfigError, match="data.path"):
        run.prepare(moved, "last")


def test_other_ranks_neither_check_nor_write(tmp_path):
    """DDP re-runs the command on every rank after rank 0 has started the run: they must not refuse it."""
    run = _started(tmp_path / "r")
    _ckpt(run.path / "sac" / "epoch0001.ckpt")
    run.last.symlink_to("epoch0001.ckpt")
    other = RunDirectory(run.path, rank_zero=False)
    assert other.prepare(CONFIG, None) is None  # rank 0 would refuse: the directory holds a run
    assert other.prepare(_with(data__penalty_coef=9.0), "last") == str(run.last)
    other.start()
    assert json.loads((run.path / IDENTITY).read_text()) == identity(CONFIG)
