"""``--num_threads auto`` (the default): each phase's thread count from ``machine.AUTO_THREADS``, capped by the
CPUs the process may use and ``OMP_NUM_THREADS``; explicit numbers win; the test suite's fits stay at one
thread. No timing is asserted here (``benchmarks/threads.py`` measures)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from mopo_lightning.commands.cli import ExitCode, main
from mopo_lightning.commands.fit import MOPOCLI, resolve_threads
from mopo_lightning.guards import ConfigError
from mopo_lightning.machine import AUTO_THREADS, auto_threads, available_cpus, thread_cap
from mopo_lightning.recipe import THREAD_PHASES
from mopo_lightning.sweep.spec import load_sweep
from mopo_lightning.sweep.trial import trial_env
from mopo_lightning.sweep.tuner import trial_config

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = str(REPO / "conf" / "quickstart.yaml")


def test_every_phase_has_an_auto_count():
    assert set(AUTO_THREADS) == set(THREAD_PHASES)


@pytest.mark.parametrize("cap, expected", [
    (1, {"dynamics": 1, "rollout": 1, "sac": 1}),
    (2, {"dynamics": 2, "rollout": 2, "sac": 1}),
    (64, AUTO_THREADS),
])
def test_auto_resolves_per_phase_under_the_cap(cap, expected):
    assert {p: resolve_threads(p, "auto", None, cap=cap) for p in THREAD_PHASES} == expected
    assert all(auto_threads(p, cap) <= cap for p in THREAD_PHASES)


def test_explicit_numbers_override_auto_and_the_cap():
    assert all(resolve_threads(p, 3, None, cap=1) == 3 for p in THREAD_PHASES)  # --num_threads 3, as given
    assert resolve_threads("dynamics", "auto", 1, cap=64) == 1  # --threads.dynamics 1
    assert resolve_threads("sac", 2, 5, cap=1) == 5


@pytest.mark.parametrize("num_threads, override, message", [
    (0, None, "--num_threads must be at least 1 or auto, got 0"),
    ("auto", 0, "--threads.sac must be at least 1, got 0"),
])
def test_bad_counts_are_config_errors(num_threads, override, message):
    with pytest.raises(ConfigError, match=message):
        resolve_threads("sac", num_threads, override, cap=2)


def test_the_cap_is_the_cpus_this_process_may_use_and_omp_num_threads(tmp_path):
    cpus = available_cpus(tmp_path)
    assert thread_cap({}, tmp_path) == cpus
    assert thread_cap({"OMP_NUM_THREADS": "1"}, tmp_path) == 1
    assert thread_cap({"OMP_NUM_THREADS": "1000"}, tmp_path) == cpus  # never above the CPUs
    assert thread_cap({"OMP_NUM_THREADS": "x"}, tmp_path) == cpus
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # a 1-CPU container on a bigger host
    assert thread_cap({}, tmp_path) == 1


def test_the_suites_fits_stay_single_threaded():
    """conftest sets OMP_NUM_THREADS=1 before torch loads: a fit without --num_threads gets 1 thread per phase."""
    assert os.environ["OMP_NUM_THREADS"] == "1" and thread_cap() == 1
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = MOPOCLI(args=["--config", QUICKSTART])
    assert cli.config.num_threads == "auto"
    assert {p: cli.threads(p) for p in THREAD_PHASES} == dict.fromkeys(THREAD_PHASES, 1)


def test_sweep_trials_run_auto_capped_at_their_cpus(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"config: {QUICKSTART}\ngrid:\n  seed_everything: [0]\n")
    (trial,) = load_sweep(sweep).trials(tmp_path, tmp_path / ".c")
    args = list(trial.fit_args)
    assert args[args.index("--num_threads") + 1] == "auto"
    for cpus in (1, 2, 3.5):
        env = trial_env(trial_config(trial, tmp_path, str(tmp_path), 1.0, cpus=cpus))
        assert env["OMP_NUM_THREADS"] == str(int(cpus))
        cap = thread_cap(env)
        assert cap <= int(cpus) and resolve_threads("rollout", "auto", None, cap=cap) == min(4, cap)
        assert resolve_threads("sac", "auto", None, cap=cap) == 1


@pytest.mark.parametrize("value, fragment", [("0", "--num_threads must be at least 1 or auto, got 0"),
                                             ("foo", "--num_threads")])
def test_bad_num_threads_is_one_line(capsys, value, fragment):
    try:
        main(["fit", "--config", QUICKSTART, "--num_threads", value])
        code = 0
    except SystemExit as stop:
        code = stop.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == ExitCode.USAGE and len(err) == 1 and fragment in err[0], err
