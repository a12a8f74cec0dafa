"""Stage 1 (dynamics training) survives SIGKILL and SIGTERM and resumes to bit-identical weights.

``fit --stage dynamics`` in subprocesses on cached random Hopper data, with a tiny ensemble and a fixed
epoch budget (no time cap), so the uninterrupted and the interrupted runs do exactly the same epochs.
Each run has its own ``--run_root`` and so its own dynamics cache: nothing is shared between them.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import collected_dataset, run_cli
from test_cli import QUICKSTART

EPOCHS = 20


def _args(root: str) -> list[str]:
    data = collected_dataset("hopper", 2_000, seed=0)
    return ["fit", "--config", str(QUICKSTART), "--data.path", str(data), "--stage", "dynamics",
            "--run_root", root, "--run_name", "dyn", "--dynamics.hidden_dim", "64",
            "--dynamics.max_epochs", str(EPOCHS), "--dynamics.max_time", "null",
            "--trainer.enable_progress_bar", "false"]


def _partial(cwd: Path, root: str) -> Path | None:
    found = list((cwd / root / ".dynamics_cache").glob("*/partial.ckpt"))
    return found[0] if found else None


def _start(cwd: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mopo_lightning.commands.cli", *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited {proc.returncode} early:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _epochs(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["state_dict"]["early_stopping.epochs"])


def test_killed_and_terminated_stage1_resumes_bit_identical(tmp_path):
    cwd = tmp_path
    run_cli(*_args("straight"), cwd=cwd)

    # SIGKILL once the first epoch's partial checkpoint is on disk.
    killed = _args("killed")
    proc = _start(cwd, killed)
    _wait_for(lambda: _partial(cwd, "killed") is not None, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _partial(cwd, "killed")
    assert partial is not None and not (partial.parent / "dynamics.ckpt").exists(), "trained to the end"
    after_kill = _epochs(partial)
    assert 1 <= after_kill < EPOCHS

    # SIGTERM after the resumed run has saved a later epoch: it saves and exits 128 + 15 with one line.
    proc = _start(cwd, [*killed, "--ckpt_path", "last"])
    _wait_for(lambda: _epochs(partial) > after_kill, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert f"resuming {partial.relative_to(cwd)} after {after_kill} epochs" in out
    line = next(line for line in out.splitlines() if line.startswith("signal 15:"))
    saved = _epochs(partial)
    assert line == (f"signal 15: stage 1 saved after {saved} epochs; "
                    "run the same command with --ckpt_path last to continue")
    assert after_kill < saved < EPOCHS

    finish = run_cli(*killed, "--ckpt_path", "last", cwd=cwd)
    assert f"resuming {partial.relative_to(cwd)} after {saved} epochs" in finish.stdout
    assert not partial.exists()  # dropped once dynamics.ckpt is written
    a = torch.load(cwd / "straight" / "dyn" / "dynamics.ckpt", weights_only=True)
    b = torch.load(cwd / "killed" / "dyn" / "dynamics.ckpt", weights_only=True)
    assert int(b["state_dict"]["early_stopping.epochs"]) == EPOCHS
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():  # weights, snapshots, early stopping, normaliser, elites
        assert torch.equal(value, b["state_dict"][key]), key
    # Training time is carried over the interruptions, not restarted at zero.
    assert b["dynamics_train_seconds"] > 0.5 * a["dynamics_train_seconds"]
