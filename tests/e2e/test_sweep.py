"""``mopo-lightning sweep`` on a local Ray with tiny budgets: shared dynamics, failures, kill and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import collected_dataset

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def sweep_file(path: Path, data: Path, grid: str, epochs: int = 2) -> Path:
    """A sweep of the quickstart config on ``data`` with the e2e tests' TINY budget."""
    path.write_text(f"""
config: {REPO / 'conf' / 'quickstart.yaml'}
trainer: {{max_epochs: {epochs}, log_every_n_steps: 5}}
data: {{path: {data}, updates_per_epoch: 50}}
mopo: {{rollout_batch_size: 500}}
dynamics: {{max_epochs: 3}}
evaluation: {{num_episodes: 2}}
grid:
{grid}
""")
    return path


def start_sweep(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The sweep in its own process group (so a test can kill the group), output to ``cwd/out.txt``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    out = open(cwd / "out.txt", "a")  # noqa: SIM115 -- closed with the process
    return subprocess.Popen([sys.executable, "-m", "mopo_lightning.commands.cli", "sweep", *args,
                             "--poll_seconds", "0.2"],
                            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def results(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def cache_entries(sweep_dir: Path) -> list[Path]:
    return [p for p in (sweep_dir / ".dynamics_cache").iterdir() if (p / "dynamics.ckpt").exists()]


def test_two_trials_share_one_dynamics_model_and_a_failed_trial_is_named(tmp_path):
    data = collected_dataset("hopper", 2_000, seed=0)
    # "bad" is no float: that trial's fit stops with a usage error (exit 2) while the other two train
    sweep = sweep_file(tmp_path / "s.yaml", data, "  mopo.penalty_coef: [1.0, 5.0, bad]")
    code = finish(start_sweep(tmp_path, str(sweep), "--num_cpus", "2", "--sweep_dir", "sw"))
    out = (tmp_path / "out.txt").read_text()
    assert code == 2, out
    sw = tmp_path / "sw"
    runs = [results(sw / name) for name in ("lam1", "lam5")]
    assert [[e["sac_updates"] for e in r["evaluations"]] for r in runs] == [[50, 100], [50, 100]]
    assert [r["penalty_coef"] for r in runs] == [1.0, 5.0]
    assert sorted(r["dynamics"]["loaded"] for r in runs) == [False, True]  # trained once, loaded once
    assert len(cache_entries(sw)) == 1
    assert "stage 1: 1 dynamics model(s) for 3 trials; trained by 1 trial run(s), loaded by 1" in out
    assert "mopo-lightning fit --config" in out and "--run_name lam5 --run_root sw" in out
    assert "lambad" in out and "FAILED (exit 2)" in out and str(sw / "lambad.log") in out
    assert "1 of 3 trials failed (lambad)" in out
    assert "report: mopo-lightning report" not in out and "not finished: lambad;" in out
    assert "evaluation 2/2: score" in out and "Ray: local, 2 CPUs" in out
    assert not (sw / "lambad.done.json").exists() and (sw / "lam1.done.json").exists()
    # Tune's own records of the sweep
    from ray.tune import ExperimentAnalysis

    (experiment,) = (sw / "tune").iterdir()
    frame = ExperimentAnalysis(str(experiment)).dataframe()
    assert sorted(frame["config/trial/name"]) == ["lam1", "lam5", "lambad"]


def _pids_with(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError, ValueError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_killed_sweep_resumes_without_retraining_finished_trials(tmp_path):
    data = collected_dataset("hopper", 2_000, seed=0)
    # 6 epochs: on an idle machine a trial's fit outlives the killed sweep by a second or two (it stops when
    # its Ray worker notices the raylet is gone), and 2 epochs were over by then
    sweep = sweep_file(tmp_path / "s.yaml", data, "  mopo.penalty_coef: [0.5, 1.0, 5.0]", epochs=6)
    args = (str(sweep), "--num_cpus", "1", "--sweep_dir", str(tmp_path / "sw"))  # one at a time, in order
    sw = tmp_path / "sw"
    first, second = sw / "lam0.5", sw / "lam1"
    proc = start_sweep(tmp_path, *args)
    try:  # kill once the first trial has finished and the second has a checkpoint but no end
        deadline = time.time() + 500
        while not ((sw / "lam0.5.done.json").exists() and (second / "sac" / "last.ckpt").exists()):
            assert proc.poll() is None and time.time() < deadline, (tmp_path / "out.txt").read_text()
            time.sleep(0.05)
        assert not (sw / "lam1.done.json").exists(), "the second trial ended before the kill: widen its budget"
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    for _ in range(100):  # the trial's fit gets SIGTERM when its Ray worker dies: nothing keeps training
        if not _pids_with(str(sw)):
            break
        time.sleep(0.2)
    assert not _pids_with(str(sw))
    kept = {p: p.stat().st_mtime_ns for p in (first / "results.json", first / "sac" / "last.ckpt",
                                                first / "dynamics.ckpt")}
    cut = len(results(second)["evaluations"])
    assert cut < 6  # the second trial was cut short: the resume has work left

    code = finish(start_sweep(tmp_path, *args))
    out = (tmp_path / "out.txt").read_text().split("Ray: local")[-1]  # the second start's lines
    assert code == 0, out
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # the finished trial was not re-run
    assert "lam0.5: skipped: finished before" in out and "lam1: resumes from its last checkpoint" in out
    log = (sw / "lam1.log").read_text()
    log = log[log.rindex("sweep trial lam1 ("):]  # the second attempt's part of the log
    assert log.startswith("sweep trial lam1 (resume) on Ray node") and "--ckpt_path last" in log
    assert "Restoring states from the checkpoint" in log
    for run in (first, second, sw / "lam5"):
        assert [e["sac_updates"] for e in results(run)["evaluations"]] == [50 * (i + 1) for i in range(6)]
    assert results(first)["dynamics"]["loaded"] is False and results(sw / "lam5")["dynamics"]["loaded"] is True
    assert len(cache_entries(sw)) == 1
    assert "lam1" in out and "finished" in out
    assert f"report: mopo-lightning report {sw}" in out  # every trial finished: the report command is offered


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_study_runs_on_a_ray_cluster_and_reports_mopo_against_mbpo(tmp_path):
    """Two datasets x MOPO/MBPO arms on a Ray head started here (127.0.0.1, 2 CPUs), then the report."""
    data_a, data_b = collected_dataset("hopper", 2_000, seed=0), collected_dataset("hopper", 2_000, seed=1)
    port = _free_port()
    temp = Path(f"/tmp/rt{os.getpid()}")  # short: Ray's socket paths must fit in 107 characters
    # Ray >= 2.5x authenticates clients with a token; ~/.ray/auth_token is shared with every other Ray on this
    # machine (and rewritten by them), so head and client get this cluster's own token, as a real cluster's nodes would
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}
    with open(tmp_path / "head.txt", "w") as log:  # the child keeps its own copy of the descriptor
        head = subprocess.Popen(["ray", "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port",
                                 str(port), "--num-cpus", "2", "--include-dashboard", "false", "--disable-usage-stats",
                                 "--temp-dir", str(temp)], cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env={**os.environ, **auth,
                                     "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"})
    try:
        sweep = tmp_path / "study.yaml"
        sweep.write_text(f"""
configs:
  - {{config: {REPO / 'conf' / 'quickstart.yaml'}, name: a, data.path: {data_a}}}
  - {{config: {REPO / 'conf' / 'quickstart.yaml'}, name: b, data.path: {data_b}, mopo.rollout_length: 1}}
arms:
  MOPO: {{}}
  MBPO: {{mopo.penalty_coef: 0.0}}
trainer: {{max_epochs: 2, log_every_n_steps: 5}}
data: {{updates_per_epoch: 50}}
mopo: {{rollout_batch_size: 500}}
dynamics: {{max_epochs: 3}}
evaluation: {{num_episodes: 2}}
grid:
  seed_everything: [0]
""")
        deadline = time.time() + 60
        while "Ray runtime started" not in (tmp_path / "head.txt").read_text():
            assert head.poll() is None and time.time() < deadline, (tmp_path / "head.txt").read_text()
            time.sleep(0.5)
        code = finish(start_sweep(tmp_path, str(sweep), "--address", f"127.0.0.1:{port}", "--sweep_dir", "sw",
                                  env=auth))
        out = (tmp_path / "out.txt").read_text()
        assert code == 0, out
        assert f"Ray: cluster at 127.0.0.1:{port}, 2 CPUs" in out
        sw = tmp_path / "sw"
        for name in ("a-MOPO-s0", "b-MOPO-s0", "a-MBPO-s0", "b-MBPO-s0"):
            log = (sw / f"{name}.log").read_text()
            # run by the head's workers: the trial's Ray context names the head's GCS port (a local Ray has its own)
            assert re.search(rf"of the cluster at [0-9.]+:{port}: mopo-lightning fit", log), log[:500]
            assert results(sw / name)["status"] == "finished" and results(sw / name)["method"] == name[2:6]
        assert results(sw / "b-MBPO-s0")["penalty_coef"] == 0.0 and results(sw / "b-MOPO-s0")["rollout_length"] == 1
        assert len(cache_entries(sw)) == 2  # one model per dataset, shared by both arms
        report = subprocess.run([sys.executable, "-m", "mopo_lightning.commands.cli", "report", str(sw),
                                 "--json", "true", "--reps", "100"],
                                cwd=tmp_path, capture_output=True, text=True, check=True)
        data = json.loads(report.stdout)
        assert sorted(a["method"] for a in data["aggregates"]) == ["MBPO", "MOPO"]
        assert all(a["n"] == 2 and len(a["tasks"]) == 2 for a in data["aggregates"])  # both datasets pooled
        assert {(p["x"], p["y"]) for p in data["probability_of_improvement"]} == {("MOPO", "MBPO"), ("MBPO", "MOPO")}
        assert data["left_out"] == []
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
        import shutil

        shutil.rmtree(temp, ignore_errors=True)
    assert not _pids_with(str(temp))  # the head and its workers are gone
