"""The D4RL loader's two modes, checked on small files collected in the real env.

``qlearning`` must be exactly D4RL's ``qlearning_dataset`` (d4rl/__init__.py, terminate_on_end=False);
``transitions`` keeps every row with the file's ``next_observations``. Expected rows are worked out by
hand from the flags of each file, and cross-checked against a literal transcription of D4RL's loop.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from mopo_lightning.data.d4rl import infer_timeouts, load_dataset


def d4rl_qlearning_reference(data: dict, max_episode_steps: int = 1000) -> dict:
    """D4RL's ``qlearning_dataset`` loop, transcribed line by line (slow; for tests only)."""
    n = data["rewards"].shape[0]
    use_timeouts = "timeouts" in data
    rows, episode_step = [], 0
    for i in range(n - 1):
        done_bool = bool(data["terminals"][i])
        if use_timeouts:  # noqa: SIM108 -- D4RL's loop as written
            final_timestep = data["timeouts"][i]
        else:
            final_timestep = episode_step == max_episode_steps - 1
        if final_timestep:
            episode_step = 0
            continue
        if done_bool or final_timestep:
            episode_step = 0
        rows.append(i)
        episode_step += 1
    rows = np.array(rows, dtype=np.int64)
    return {"rows": rows, "next_observations": data["observations"][rows + 1]}


def read(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        return {
            k: f[k][()]
            for k in ("observations", "actions", "rewards", "terminals", "timeouts", "next_observations")
            if k in f
        }


def rewrite(src: Path, dst: Path, **changes) -> Path:
    """Copy ``src`` to ``dst`` and replace (array) or delete (None) datasets."""
    shutil.copy(src, dst)
    with h5py.File(dst, "a") as f:
        for key, value in changes.items():
            key = key.replace("__", "/")
            if key in f:
                del f[key]
            if value is not None:
                f.create_dataset(key, data=value)
    return dst


def test_transitions_mode_keeps_every_row(hopper_flags):
    raw = read(hopper_flags)
    td = load_dataset(hopper_flags, "hopper")
    n = raw["rewards"].shape[0]
    assert td.batch_size == torch.Size([n])
    assert raw["timeouts"].sum() > 5 and raw["terminals"].sum() > 5  # the file exercises both flags
    np.testing.assert_array_equal(td["observation"].numpy(), raw["observations"])
    np.testing.assert_array_equal(td["action"].numpy(), raw["actions"])
    np.testing.assert_array_equal(td["next", "observation"].numpy(), raw["next_observations"])
    np.testing.assert_array_equal(td["next", "reward"].numpy(), raw["rewards"][:, None])
    np.testing.assert_array_equal(td["next", "terminated"].numpy()[:, 0], raw["terminals"])
    np.testing.assert_array_equal(td["next", "truncated"].numpy()[:, 0], raw["timeouts"])
    np.testing.assert_array_equal(td["next", "done"].numpy()[:, 0], raw["terminals"] | raw["timeouts"])
    for key in ("observation", "action", ("next", "observation"), ("next", "reward")):
        assert td[key].dtype == torch.float32
    for key in ("terminated", "truncated", "done"):
        assert td["next", key].dtype == torch.bool and td["next", key].shape == (n, 1)


def test_qlearning_mode_drops_timeouts_and_the_last_row(hopper_flags):
    raw = read(hopper_flags)
    td = load_dataset(hopper_flags, "hopper", mode="qlearning")
    n = raw["rewards"].shape[0]
    t0 = int(np.flatnonzero(raw["timeouts"])[0])  # first time-limit row: dropped
    k0 = int(np.flatnonzero(raw["terminals"])[0])  # first terminal row: kept, done
    assert t0 < k0  # the 25-step limit strikes before the first fall in this file
    # Rows before t0 come through unchanged, with observations[i + 1] as next observation.
    np.testing.assert_array_equal(td["observation"][:t0].numpy(), raw["observations"][:t0])
    np.testing.assert_array_equal(td["next", "observation"][:t0].numpy(), raw["observations"][1 : t0 + 1])
    # Output row t0 is input row t0 + 1 (the first of the second episode).
    np.testing.assert_array_equal(td["observation"][t0].numpy(), raw["observations"][t0 + 1])
    # The terminal row k0 sits at k0 - (timeouts before it), done, with D4RL's observations[k0 + 1]
    # (the next episode's reset state), not the true next observation.
    j = k0 - int(raw["timeouts"][:k0].sum())
    np.testing.assert_array_equal(td["observation"][j].numpy(), raw["observations"][k0])
    np.testing.assert_array_equal(td["next", "observation"][j].numpy(), raw["observations"][k0 + 1])
    assert not np.allclose(raw["observations"][k0 + 1], raw["next_observations"][k0])
    assert td["next", "terminated"][j].item() and td["next", "done"][j].item()
    # Counts: N - 1 rows (the last never emitted) less the time-limit rows among them.
    assert td.batch_size[0] == n - 1 - int(raw["timeouts"][: n - 1].sum())
    assert int(td["next", "terminated"].sum()) == int(raw["terminals"][: n - 1].sum())
    assert not td["next", "truncated"].any()
    ref = d4rl_qlearning_reference(raw)
    np.testing.assert_array_equal(td["observation"].numpy(), raw["observations"][ref["rows"]])
    np.testing.assert_array_equal(td["next", "observation"].numpy(), ref["next_observations"])
    np.testing.assert_array_equal(td["next", "reward"].numpy()[:, 0], raw["rewards"][ref["rows"]])


def test_step_999_rule_without_timeouts(halfcheetah_2100, tmp_path):
    """HalfCheetah never falls: its time limit ends episodes at rows 999 and 1999."""
    raw = read(halfcheetah_2100)
    np.testing.assert_array_equal(np.flatnonzero(raw["timeouts"]), [999, 1999])
    assert not raw["terminals"].any()
    path = rewrite(halfcheetah_2100, tmp_path / "no_timeouts.hdf5", timeouts=None)
    td = load_dataset(path, "halfcheetah", mode="qlearning")
    kept = np.setdiff1d(np.arange(2099), [999, 1999])
    assert td.batch_size[0] == 2097
    np.testing.assert_array_equal(td["observation"].numpy(), raw["observations"][kept])
    np.testing.assert_array_equal(td["next", "observation"].numpy(), raw["observations"][kept + 1])
    # transitions mode: next_observations exist, so every row stays; no timeouts key -> no truncation.
    td = load_dataset(path, "halfcheetah")
    assert td.batch_size[0] == 2100 and not td["next", "done"].any()
    # Without next_observations either (a D4RL v0 file), transitions falls back to the qlearning rows.
    path = rewrite(path, tmp_path / "v0_like.hdf5", next_observations=None)
    td = load_dataset(path, "halfcheetah")
    np.testing.assert_array_equal(td["observation"].numpy(), raw["observations"][kept])
    np.testing.assert_array_equal(td["next", "observation"].numpy(), raw["observations"][kept + 1])


@pytest.mark.parametrize(
    "terminal_rows, dropped",
    [
        # D4RL's counter restarts at 1 after a kept terminal: the next cut comes 998 rows later.
        ([500], [1499]),
        # A terminal on a final row is dropped like a timeout; the counter restarts at 0.
        ([999], [999, 1999]),
        ([10, 1100], [1009]),  # 11 + 998; the terminal at 1100 restarts the count before 2009
        ([1099], [999, 2098]),  # 1100 + 998 = 2098, the last row D4RL visits
    ],
)
def test_step_999_rule_after_terminals(halfcheetah_2100, tmp_path, terminal_rows, dropped):
    raw = read(halfcheetah_2100)
    terminals = np.zeros(2100, dtype=bool)
    terminals[terminal_rows] = True
    path = rewrite(halfcheetah_2100, tmp_path / "t.hdf5", timeouts=None, terminals=terminals)
    td = load_dataset(path, "halfcheetah", mode="qlearning")
    kept = np.setdiff1d(np.arange(2099), dropped)
    np.testing.assert_array_equal(td["observation"].numpy(), raw["observations"][kept])
    ref = d4rl_qlearning_reference(
        {k: v for k, v in {**raw, "terminals": terminals}.items() if k != "timeouts"}
    )
    np.testing.assert_array_equal(ref["rows"], kept)


@pytest.mark.parametrize("seed", range(5))
def test_infer_timeouts_matches_d4rl_counter(seed):
    """The vectorised counter against D4RL's loop, with a short limit so that every case occurs."""
    rng = np.random.default_rng(seed)
    n, limit = 3000, 7
    terminals = rng.random(n) < 0.08
    final = infer_timeouts(terminals, max_episode_steps=limit)
    ref = d4rl_qlearning_reference(
        {"rewards": np.zeros(n), "terminals": terminals, "observations": np.zeros((n, 1))}, limit
    )
    np.testing.assert_array_equal(np.flatnonzero(~final[: n - 1]), ref["rows"])
    assert (final & terminals).any()  # the case "terminal on a final row" was exercised
