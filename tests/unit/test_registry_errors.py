"""Names no registry knows: one line with the closest known name, exit 2 (``guards.UnknownName``).

The lookups (tasks, penalty kinds, D4RL names, Farama's Minari ids) in-process, then ``fit`` in-process
(``commands.cli.main``) for each way a name reaches one: the task, a Minari id (raised inside jsonargparse's link, which
wraps it), a D4RL name (raised when the recipe opens the data) and the ``Literal`` options jsonargparse checks.
None of these reads data or writes a run.
"""

from __future__ import annotations

import pytest
import torch

from mopo_lightning.commands.cli import ExitCode, exit_code, fault, main
from mopo_lightning.data.d4rl_download import dataset_url
from mopo_lightning.data.errors import DatasetError, UnknownDataset
from mopo_lightning.data.minari import check_farama_id
from mopo_lightning.envs.tasks import get_task
from mopo_lightning.guards import ConfigError, UnknownName, did_you_mean, unknown_name
from mopo_lightning.model_env.penalties import uncertainty_penalty


def test_the_helper_names_the_closest_and_lists_the_rest():
    error = unknown_name("task", "hoper", ["walker2d", "hopper", "ant"])
    assert isinstance(error, ConfigError) and isinstance(error, KeyError)
    assert str(error) == "unknown task 'hoper' (did you mean hopper?); known: ant, hopper, walker2d"
    assert did_you_mean("xyz", ["hopper"]) == "" and did_you_mean("HOPER", ["hopper"]) == " (did you mean hopper?)"
    assert exit_code(error) == ExitCode.USAGE == 2


@pytest.mark.parametrize(("name", "hint"), [("hoper", "hopper"), ("Walker", "walker2d"),
                                            ("hoper-medium-v2", "hopper"), ("halfchetah-jump", "halfcheetah-jump")])
def test_an_unknown_task_is_one_line_and_still_a_key_error(name, hint):
    with pytest.raises(KeyError) as info:  # collect and data info catch it as a KeyError
        get_task(name)
    assert isinstance(info.value, UnknownName)
    assert str(info.value).startswith(f"unknown task {name!r} (did you mean {hint}?); known: ant, ")


def test_an_unknown_penalty_kind_suggests_the_registered_one():
    mean = std = torch.ones(3, 2, 4)
    with pytest.raises(UnknownName, match=r"unknown penalty kind 'loo-kl' \(did you mean loo_kl\?\)"):
        uncertainty_penalty(mean, std, "loo-kl")  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "hint"), [("hoppr-medium-v2", "hopper-medium-v2"),
                                            ("hopper-medium-replay-v9", "hopper-medium-replay-v2"),
                                            ("walker2d-meduim-v2", "walker2d-medium-v2")])
def test_an_unknown_d4rl_name_is_a_usage_error_that_data_callers_still_catch(name, hint):
    with pytest.raises(UnknownDataset) as info:
        dataset_url(name)
    assert isinstance(info.value, DatasetError) and exit_code(info.value) == 2  # usage first: exit 2, not 3
    assert f"{name}: not a known D4RL dataset name (did you mean {hint}?)" in str(info.value)


def test_known_d4rl_names_keep_their_urls():
    assert dataset_url("hopper-full-replay-v2").endswith("/gym_mujoco_v2/hopper_full_replay-v2.hdf5")
    assert dataset_url("ant-medium-replay-v0").endswith("/gym_mujoco/ant_mixed.hdf5")


@pytest.mark.parametrize(("dataset_id", "hint"), [("mujoco/hoper/medium-v0", "mujoco/hopper/medium-v0"),
                                                  ("mujoco/walker2d/meduim-v0", "mujoco/walker2d/medium-v0"),
                                                  ("mujoco/humanoid/medium-v0", None)])
def test_a_farama_id_of_an_unknown_robot_or_quality_is_refused_before_any_download(dataset_id, hint):
    with pytest.raises(UnknownDataset) as info:
        check_farama_id(dataset_id)
    assert str(info.value).startswith(f"unknown Minari dataset {dataset_id!r}"
                                      + (f" (did you mean {hint}?)" if hint else ";"))
    for fine in ("mujoco/hopper/expert-v0", "local/hoper/random-v0", "D4RL/door/human-v2"):
        check_farama_id(fine)  # anything else is Minari's to resolve


def test_a_wrapped_fault_is_reported_as_its_cause():
    cause = UnknownDataset("unknown Minari dataset 'x'")
    try:
        try:
            raise cause
        except UnknownDataset as err:
            raise ValueError("Call to compute_fn of link 'data --> model.obs_dim' failed: ...") from err
    except ValueError as wrapper:
        assert fault(wrapper) is cause and exit_code(fault(wrapper)) == 2
    bug = ValueError("a bug")
    assert fault(bug) is bug and exit_code(fault(bug)) is None


@pytest.mark.parametrize(("args", "text"), [
    (["--data.task", "hoper", "--data.dataset", "hopper-medium-v2"],
     "mopo-lightning: error: unknown task 'hoper' (did you mean hopper?); known: "),
    (["--data.task", "hopper", "--data.dataset", "mujoco/hoper/medium-v0"],
     "mopo-lightning: error: unknown Minari dataset 'mujoco/hoper/medium-v0' (did you mean mujoco/hopper/medium-v0?)"),
    (["--data.task", "hopper", "--data.dataset", "hoppr-medium-v2"],
     "mopo-lightning: error: hoppr-medium-v2: not a known D4RL dataset name (did you mean hopper-medium-v2?)"),
    (["--data.task", "hopper", "--data.dataset", "hopper-medium-v2", "--mopo.penalty_kind", "llvv"],
     "mopo-lightning fit: error: invalid value 'llvv' for --mopo.penalty_kind (expected one of 'aleatoric', "),
    (["--data.task", "hopper", "--data.dataset", "hopper-medium-v2", "--data.mode", "qlearn"],
     ("mopo-lightning fit: error: invalid value 'qlearn' for --data.mode (expected one of 'transitions', "
      "'qlearning'; did you mean qlearning?)")),
])
def test_fit_with_an_unknown_name_ends_with_one_line_and_exit_2(capsys, tmp_path, monkeypatch, args, text):
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--run_root", str(tmp_path / "runs"), *args])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert stop.value.code == ExitCode.USAGE and len(lines) == 1 and lines[0].startswith(text), err[-2000:]
    if "penalty_kind" in text:
        assert lines[0].endswith("'loo_kl'; did you mean llv?); see mopo-lightning fit --help")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run, no download, no store
