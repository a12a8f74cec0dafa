"""Renamed config keys fail with one line naming the new key, on the command line and in YAML."""

from __future__ import annotations

import pytest

from mopo_lightning.config_keys import RENAMED_KEYS, check_renamed_keys
from mopo_lightning.guards import ConfigError


@pytest.mark.parametrize("old", sorted(RENAMED_KEYS))
def test_old_key_on_the_command_line_names_the_new_one(old):
    for argv in (["--" + old, "3"], ["--" + old + "=3"]):
        with pytest.raises(ConfigError, match=f"`{old}` was renamed to `{RENAMED_KEYS[old]}`"):
            check_renamed_keys(argv)


@pytest.mark.parametrize("old", sorted(RENAMED_KEYS))
def test_old_key_in_a_config_file_names_the_file_and_the_new_key(tmp_path, old):
    section, key = old.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(f"{section}:\n  {key}: 3\n")
    with pytest.raises(ConfigError, match=f"{path}: `{old}` was renamed to `{RENAMED_KEYS[old]}`"):
        check_renamed_keys(["--config", str(path)])


def test_current_keys_pass(tmp_path):
    path = tmp_path / "new.yaml"
    path.write_text("mopo:\n  penalty_kind: aleatoric\n  penalty_coef: 1.0\ndynamics:\n  num_layers: 4\n")
    check_renamed_keys(["--config", str(path), "--mopo.penalty_coef", "2", "--dynamics.num_layers", "3"])


def test_old_key_set_to_null_in_a_config_file_is_refused_too(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("dynamics:\n  max_seconds: null\n")  # as conf/quickstart.yaml wrote it before max_time
    with pytest.raises(ConfigError, match="`dynamics.max_seconds` was renamed to `dynamics.max_time`"):
        check_renamed_keys(["--config", str(path)])
