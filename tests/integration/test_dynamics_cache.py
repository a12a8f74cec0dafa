"""Dynamics models identified by what made them: fingerprint, refusal on mismatch, shared cache, lock.

Stage 1 runs through ``training.stage1.dynamics_stage`` on cached random Hopper data with a tiny ensemble
(one hidden layer of 8, two epochs), so each training takes about a second.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import collected_dataset

from mopo_lightning.dynamics.fingerprint import (
    DYNAMICS_CODE_VERSION,
    FINGERPRINT_VERSION,
    dataset_sha256,
    dynamics_fingerprint,
    exclusive_lock,
    fingerprint_key,
)
from mopo_lightning.guards import ConfigError
from mopo_lightning.training.datamodule import OfflineDataModule
from mopo_lightning.training.stage1 import dynamics_stage

TINY = {"hidden_dim": 8, "num_layers": 1, "weight_decays": (1e-5, 1e-4), "max_epochs": 2, "max_time": None}
TRAINER = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False}


def _datamodule(path: Path, **kwargs) -> OfflineDataModule:
    return OfflineDataModule(task="hopper", path=str(path), **kwargs)


def _stage1(path: Path, run_dir: Path, cache: Path, hparams: dict | None = None, checkpoint: str | None = None,
            **data_kwargs):
    return dynamics_stage(_datamodule(path, **data_kwargs), hparams={**TINY, **(hparams or {})}, run_dir=run_dir,
                          checkpoint=checkpoint, trainer_kwargs=TRAINER, logger=False, cache_dir=cache)


def _loaded(path: Path, **kwargs) -> OfflineDataModule:
    dm = _datamodule(path, **kwargs)
    dm.setup()
    return dm


def _key(sha: str, hparams: dict | None = None, **data_kwargs) -> str:
    dm = _datamodule(Path("unused.hdf5"), **data_kwargs)
    return fingerprint_key(dynamics_fingerprint(sha, dm.hparams, {**TINY, **(hparams or {})}))


def test_fingerprint_follows_what_shapes_the_model_and_nothing_else(tmp_path):
    base = _key("a" * 64)
    assert _key("a" * 64) == base
    for changed in (_key("b" * 64), _key("a" * 64, {"hidden_dim": 16}), _key("a" * 64, {"max_epochs": 3}),
                    _key("a" * 64, seed=1), _key("a" * 64, mode="qlearning"), _key("a" * 64, holdout_ratio=0.1),
                    _key("a" * 64, max_holdout=500), _key("a" * 64, dynamics_batch_size=128)):
        assert changed != base
    for stage2 in ({"batch_size": 128}, {"updates_per_epoch": 7}):  # the mopo group never reaches stage 1
        assert _key("a" * 64, **stage2) == base, stage2
    # An omitted hyper-parameter is its default; 120 and 120.0 are one setting.
    dm = _datamodule(Path("unused.hdf5"))
    assert dynamics_fingerprint("a" * 64, dm.hparams, {}) == dynamics_fingerprint(
        "a" * 64, dm.hparams, {"num_members": 7, "max_time": None})
    assert dynamics_fingerprint("a", dm.hparams, {"max_epochs": 120}) == dynamics_fingerprint(
        "a", dm.hparams, {"max_epochs": 120.0})


def test_dataset_hash_is_the_content_and_is_remembered_per_size_and_mtime(tmp_path):
    source = collected_dataset("hopper", 2_000, seed=0)
    copy = tmp_path / "copy.hdf5"
    shutil.copyfile(source, copy)
    cache = tmp_path / "cache"
    first = dataset_sha256(copy, cache)
    assert first == dataset_sha256(source)  # same bytes, another path: same hash
    assert len(list((cache / "dataset_hashes").iterdir())) == 1
    data = bytearray(copy.read_bytes())
    data[-1] ^= 1
    copy.write_bytes(bytes(data))
    os.utime(copy, ns=(time.time_ns(), time.time_ns() + 10**9))  # a new mtime, as any rewrite gives
    assert dataset_sha256(copy, cache) != first
    other = collected_dataset("hopper", 1_000, seed=0, max_episode_steps=25)
    assert dataset_sha256(other) != dataset_sha256(source)


def test_mismatched_model_refuses_naming_what_differs(tmp_path):
    data = collected_dataset("hopper", 2_000, seed=0)
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    _, info = _stage1(data, run_dir, cache)
    assert info["loaded"] is False and (run_dir / "dynamics.ckpt").exists()
    with pytest.raises(ConfigError, match=r"dynamics.hidden_dim \(8 -> 16\)") as error:
        _stage1(data, run_dir, cache, {"hidden_dim": 16})
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r"data.seed \(0 -> 3\)"):
        _stage1(data, run_dir, cache, seed=3)
    other = collected_dataset("hopper", 1_000, seed=0, max_episode_steps=25)
    with pytest.raises(ConfigError, match=r"data.sha256 "):
        _stage1(other, run_dir, cache)
    with pytest.raises(ConfigError, match=r"--dynamics_checkpoint .* dynamics.max_epochs \(2 -> 3\)"):
        _stage1(data, tmp_path / "run2", cache, {"max_epochs": 3}, checkpoint=str(run_dir / "dynamics.ckpt"))
    # A model of an earlier layout (another fingerprint version, a renamed buffer) is named as such before its
    # weights are read, not reported as a damaged file; a file with no fingerprint at all is refused too.
    old = torch.load(run_dir / "dynamics.ckpt", weights_only=True)
    old["dynamics_fingerprint"]["version"] = 1
    old["state_dict"]["early_stopping.num_updates"] = old["state_dict"].pop("early_stopping.epochs")
    torch.save(old, tmp_path / "old.ckpt")
    refused = rf"trained with other settings or code: version \(1 -> {FINGERPRINT_VERSION}\)"
    with pytest.raises(ConfigError, match=refused):
        _stage1(data, tmp_path / "run3", cache, checkpoint=str(tmp_path / "old.ckpt"))
    del old["dynamics_fingerprint"]
    torch.save(old, tmp_path / "bare.ckpt")
    with pytest.raises(ConfigError, match="records no fingerprint"):
        _stage1(data, tmp_path / "run3", cache, checkpoint=str(tmp_path / "bare.ckpt"))
    # The same settings load it, and report its real training time.
    module, again = _stage1(data, run_dir, cache, batch_size=128)
    assert again["loaded"] is True and again["seconds"] == info["seconds"] > 0
    assert again["fingerprint"] == info["fingerprint"] == fingerprint_key(module.fingerprint)


def test_a_model_of_other_code_is_retrained_for_the_cache_and_refused_elsewhere(tmp_path, monkeypatch):
    """A model trained under another torch (or ``DYNAMICS_CODE_VERSION``) is never served: the cache trains a new
    entry, and the run's own ``dynamics.ckpt`` or an explicit ``--dynamics_checkpoint`` is refused in one line
    naming the field."""
    from mopo_lightning.dynamics import fingerprint

    data = collected_dataset("hopper", 2_000, seed=0)
    cache, current = tmp_path / "cache", str(torch.__version__)
    monkeypatch.setattr(torch, "__version__", "1.0.0")  # as if trained before an upgrade
    _, old = _stage1(data, tmp_path / "old", cache)
    monkeypatch.undo()
    assert old["fingerprint_fields"]["torch"] == "1.0.0"
    _, new = _stage1(data, tmp_path / "new", cache)
    assert new["loaded"] is False and new["fingerprint"] != old["fingerprint"]  # retrained, not served
    assert new["fingerprint_fields"]["torch"] == current
    with pytest.raises(ConfigError, match=rf'dynamics: .* torch \("1.0.0" -> "{re.escape(current)}"\); ') as error:
        _stage1(data, tmp_path / "old", cache)
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match=r'--dynamics_checkpoint .* torch \("1.0.0" -> '):
        _stage1(data, tmp_path / "other", cache, checkpoint=str(tmp_path / "old" / "dynamics.ckpt"))
    # a checkpoint whose stored fingerprint names another torch, or an older code version, written by hand
    for field, value in (("torch", "2.0.0"), ("code_version", DYNAMICS_CODE_VERSION - 1)):
        stored = torch.load(new["cache_entry"], weights_only=True)
        stored["dynamics_fingerprint"][field] = value
        torch.save(stored, tmp_path / "hand.ckpt")
        with pytest.raises(ConfigError, match=rf"other settings or code: {field} \({json.dumps(value)} -> "):
            _stage1(data, tmp_path / "other", cache, checkpoint=str(tmp_path / "hand.ckpt"))
    monkeypatch.setattr(fingerprint, "DYNAMICS_CODE_VERSION", DYNAMICS_CODE_VERSION + 1)  # the code changed
    _, bumped = _stage1(data, tmp_path / "bumped", cache)
    assert bumped["loaded"] is False and bumped["fingerprint"] not in (old["fingerprint"], new["fingerprint"])


def test_runs_differing_in_stage2_settings_share_one_trained_model(tmp_path, capsys):
    data = collected_dataset("hopper", 2_000, seed=0)
    cache = tmp_path / "cache"
    first, info = _stage1(data, tmp_path / "h5", cache, batch_size=256)
    entry = cache / info["fingerprint"] / "dynamics.ckpt"
    assert info["cache_entry"] == str(entry) and not (entry.parent / "partial.ckpt").exists()
    mtime = entry.stat().st_mtime_ns
    capsys.readouterr()
    second, again = _stage1(data, tmp_path / "h1", cache, batch_size=128, updates_per_epoch=7)
    assert "from the cache" in capsys.readouterr().out
    assert again["loaded"] is True and again["seconds"] == info["seconds"]
    assert entry.stat().st_mtime_ns == mtime  # not retrained
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    assert (tmp_path / "h1" / "dynamics.ckpt").read_bytes() == entry.read_bytes()  # the run holds a copy


def test_lock_serialises_holders(tmp_path):
    spans, waited = [], []

    def hold(name: str) -> None:
        with exclusive_lock(tmp_path / "lock", on_wait=lambda: waited.append(name)):
            start = time.monotonic()
            time.sleep(0.3)
            spans.append((start, time.monotonic()))

    threads = [threading.Thread(target=hold, args=(str(i),)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    spans.sort()
    assert len(spans) == 3 and len(waited) >= 1
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans  # never two holders at once


def test_a_waiting_trainer_loads_what_the_lock_holder_trained(tmp_path, capsys):
    data = collected_dataset("hopper", 2_000, seed=0)
    _, trained = _stage1(data, tmp_path / "elsewhere", tmp_path / "other_cache")
    cache = tmp_path / "cache"
    entry = cache / trained["fingerprint"]
    result = {}
    with exclusive_lock(entry / "lock"):  # "another process" is training this entry
        worker = threading.Thread(target=lambda: result.update(info=_stage1(data, tmp_path / "run", cache)[1]))
        worker.start()
        deadline = time.monotonic() + 60
        while "waiting for another process" not in capsys.readouterr().out:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.05)
        shutil.copyfile(trained["cache_entry"], entry / "dynamics.ckpt")  # ... and finishes
    worker.join(60)
    assert result["info"]["loaded"] is True and result["info"]["seconds"] == trained["seconds"]


def test_a_file_replaced_after_it_was_read_is_refused(tmp_path):
    path = tmp_path / "data.hdf5"
    shutil.copyfile(collected_dataset("hopper", 2_000, seed=0), path)
    dm = _datamodule(path)
    dm.setup()  # the rows are read here
    replacement = tmp_path / "other.hdf5"
    shutil.copyfile(collected_dataset("hopper", 1_000, seed=0, max_episode_steps=25), replacement)
    os.replace(replacement, path)  # a concurrent collector renames its file into place
    from mopo_lightning.data.errors import DatasetError

    with pytest.raises(DatasetError, match="changed after this run read it"):
        dynamics_stage(dm, hparams=TINY, run_dir=tmp_path / "run", checkpoint=None, trainer_kwargs=TRAINER,
                       logger=False, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("*/dynamics.ckpt"))
    # the same bytes under the same name but a new inode count as a replacement too (cp -p keeps the mtime)
    dm = _datamodule(path)
    dm.setup()
    shutil.copy2(path, tmp_path / "copy.hdf5")
    os.replace(tmp_path / "copy.hdf5", path)
    with pytest.raises(DatasetError, match="changed after this run read it"):
        dynamics_stage(dm, hparams=TINY, run_dir=tmp_path / "run", checkpoint=None, trainer_kwargs=TRAINER,
                       logger=False, cache_dir=tmp_path / "cache")


def test_a_model_cut_by_the_wall_clock_is_kept_in_its_run_and_never_cached(tmp_path, capsys):
    data = collected_dataset("hopper", 2_000, seed=0)
    capped = {"max_time": {"milliseconds": 1}, "max_epochs": 5}  # the first step outlasts 1 ms: the clock ends it
    module, info = _stage1(data, tmp_path / "a", tmp_path / "cache", capped)
    assert bool(module.time_capped) and info["reproducible"] is False and info["loaded"] is False
    assert int(module.early_stopping.epochs) == 1
    assert (tmp_path / "a" / "dynamics.ckpt").exists()
    assert not list((tmp_path / "cache").glob("*/dynamics.ckpt"))  # nothing another run could load
    assert "not reproducible; kept in" in capsys.readouterr().out
    _, again = _stage1(data, tmp_path / "b", tmp_path / "cache", capped)
    assert again["loaded"] is False and again["fingerprint"] == info["fingerprint"]  # trained again, not served
    _, resumed = _stage1(data, tmp_path / "a", tmp_path / "cache", capped)  # its own run keeps it
    assert resumed["loaded"] is True
    module, plain = _stage1(data, tmp_path / "c", tmp_path / "cache")  # an epoch cap: reproducible, cached
    assert not bool(module.time_capped) and "reproducible" not in plain
    assert list((tmp_path / "cache").glob("*/dynamics.ckpt"))


def test_the_penalty_scales_are_measured_once_and_travel_with_the_cached_model(tmp_path, monkeypatch):
    """Stage 1 measures every penalty kind's scale on the data after training and saves it in the checkpoint:
    a run with another penalty kind loads the cached model with its scales, measuring nothing; a model saved
    without them (older) is measured on load."""
    from mopo_lightning.dynamics.module import load_dynamics
    from mopo_lightning.model_env.penalties import PENALTY_KINDS, measure_scales
    from mopo_lightning.training import stage1

    data = collected_dataset("hopper", 2_000, seed=0)
    cache = tmp_path / "cache"
    module, info = _stage1(data, tmp_path / "a", cache)
    scales = info["penalty_scales"]
    assert set(scales["kinds"]) == set(PENALTY_KINDS) and scales["rows"] == 2_000  # every row (under 10,000)
    assert scales == module.penalty_scales == load_dynamics(info["cache_entry"]).penalty_scales
    assert load_dynamics(tmp_path / "a" / "dynamics.ckpt").penalty_scales == scales
    measured = []
    monkeypatch.setattr(stage1, "measure_scales", lambda *a, **k: measured.append(1) or measure_scales(*a, **k))
    loaded, again = _stage1(data, tmp_path / "b", cache)
    assert again["loaded"] is True and again["penalty_scales"] == scales and not measured
    loaded.penalty_scales = None  # as a model saved before scales existed
    assert stage1.penalty_scales(loaded, _loaded(data)) == scales and measured == [1]
