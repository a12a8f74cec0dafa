"""Sweep files: several configs x named arms x a grid, their trial names, order and fit arguments."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from mopo_lightning.dynamics.fingerprint import CONFIG_KEYS, dynamics_fingerprint
from mopo_lightning.guards import ConfigError
from mopo_lightning.sweep.spec import is_fingerprint_key, load_sweep
from mopo_lightning.training.datamodule import OfflineDataModule

REPO = Path(__file__).resolve().parents[2]


def _args(trial) -> dict[str, list[str]]:
    """Every --key of a trial's fit arguments with its values in order (a key may repeat: later wins)."""
    out: dict[str, list[str]] = {}
    args = list(trial.fit_args)
    for key, value in zip(args[::2], args[1::2], strict=True):
        out.setdefault(key.removeprefix("--"), []).append(value)
    return out


def test_configs_times_arms_times_grid_with_per_dataset_settings(tmp_path):
    sweep = tmp_path / "t.yaml"
    sweep.write_text(f"""
configs:
  - {REPO}/conf/hopper_mixed.yaml
  - {{config: {REPO}/conf/walker2d_mixed.yaml, name: w, data.path: w.hdf5}}
arms:
  MOPO: {{}}
  MBPO: {{mopo.penalty_coef: 0.0}}
trainer: {{max_epochs: 3}}
grid:
  seed_everything: [0, 1]
""")
    trials = load_sweep(sweep).trials(Path("sw"), Path("sw/.c"))
    names = [t.name for t in trials]
    # arms vary slowest; configs and seeds (both change the dynamics model) fastest
    assert names == ["hopper_mixed-MOPO-s0", "hopper_mixed-MOPO-s1", "w-MOPO-s0", "w-MOPO-s1",
                     "hopper_mixed-MBPO-s0", "hopper_mixed-MBPO-s1", "w-MBPO-s0", "w-MBPO-s1"]
    mbpo_w = _args(trials[7])
    assert mbpo_w["config"] == [f"{REPO}/conf/walker2d_mixed.yaml"] and mbpo_w["data.path"] == ["w.hdf5"]
    assert mbpo_w["mopo.penalty_coef"] == ["0.0"] and mbpo_w["method"] == ["MBPO"]
    assert mbpo_w["trainer.max_epochs"] == ["3"] and mbpo_w["seed_everything"] == ["1"]
    assert "mopo.penalty_coef" not in _args(trials[0])  # MOPO: each dataset's own lambda from its config
    assert trials[7].overrides == {"config": "w", "method": "MBPO", "seed_everything": 1}


def test_one_config_keeps_the_grid_names_and_bad_files_are_one_line(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text(f"config: {REPO}/conf/quickstart.yaml\ngrid:\n  mopo.penalty_coef: [1.0, 5.0]\n")
    assert [t.name for t in load_sweep(one).trials(Path("s"), Path("c"))] == ["lam1", "lam5"]
    bad = {"arms: {MOPO: {}}\nconfigs: [conf/quickstart.yaml]\ngrid: {method: [a]}\n": "'method' (grid) is set by",
           "config: conf/quickstart.yaml\nconfigs: [conf/quickstart.yaml]\n": "not both",
           "configs: [conf/quickstart.yaml]\n": "nothing to sweep",
           "configs: [conf/quickstart.yaml, conf/quickstart.yaml]\narms: {A: {}}\n": "share a name",
           "configs: [conf/quickstart.yaml]\narms: {'a b': {}}\n": "arm name 'a b'",
           "configs: [nope.yaml]\narms: {A: {}}\n": "config 'nope.yaml' not found",
           "grid:\n  seed_everything: [0\n": "YAML syntax error"}
    for text, message in bad.items():
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_sweep(path)
    broken = tmp_path / "broken_config.yaml"
    broken.write_text("trainer:\n  max_epochs: [1\n")
    path = tmp_path / "s.yaml"
    path.write_text(f"configs: [{broken}]\narms: {{A: {{}}}}\n")
    with pytest.raises(ConfigError, match=rf"{broken}:3:1: YAML syntax error"):
        load_sweep(path)  # a broken config stops the sweep before any trial


def test_trial_order_reads_the_fingerprints_own_keys():
    hparams = OfflineDataModule(task="hopper", path="x.hdf5").hparams
    fields = dynamics_fingerprint("a" * 64, hparams, {})
    for field in fields:
        if field.startswith(("data.", "dynamics.")) and field != "data.sha256":
            assert is_fingerprint_key(field), field
    parameters = inspect.signature(OfflineDataModule.__init__).parameters
    for key in CONFIG_KEYS:  # every data key named is a real DataModule argument (no 'data.holdout' typo)
        if key.startswith("data."):
            assert key.removeprefix("data.") in parameters, key
    for key in ("data.holdout_ratio", "data.max_holdout", "data.max_rows", "data.mode", "data.dynamics_batch_size",
                "data.path", "data.dataset", "seed_everything", "dynamics.hidden_dim"):
        assert is_fingerprint_key(key), key
    for key in ("mopo.rollout_length", "mopo.penalty_coef", "model.actor_lr", "trainer.max_epochs"):
        assert not is_fingerprint_key(key), key


def test_sweep_json_keeps_the_sweep_files_text_and_hash(tmp_path):
    """``sweep.json`` holds what ran: the sweep file's text and SHA-256, unchanged when the file is edited later."""
    import hashlib
    import json

    from mopo_lightning.sweep.tuner import write_index

    sweep = tmp_path / "t.yaml"
    text = f"config: {REPO}/conf/hopper_mixed.yaml\ngrid:\n  seed_everything: [0, 1]  # two seeds\n"
    sweep.write_text(text)
    write_index(tmp_path / "sw", str(sweep), load_sweep(sweep).trials(tmp_path / "sw", tmp_path / "c"))
    sweep.write_text(text.replace("[0, 1]", "[0, 1, 2]"))  # the file changes after the sweep ran
    index = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert index["sweep_file"] == str(sweep) and index["sweep_text"] == text
    assert index["sweep_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert [t["name"] for t in index["trials"]] == ["s0", "s1"]
