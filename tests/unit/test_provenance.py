"""A run's provenance: the package's version and commit (git, else the installed metadata), the libraries, the
device."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import metadata
from pathlib import Path

import pytest

from mopo_lightning import provenance as prov
from mopo_lightning.machine import available_cpus

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


def test_the_record_has_the_layout_report_reads():
    record = prov.provenance({"dynamics": 2, "rollout": 2, "sac": 1}, "cpu")
    assert set(record) == {"package", "libraries", "device"}
    package = record["package"]
    assert set(package) == {"name", "version", "commit", "dirty", "source"}
    assert package["name"] == "mopo-lightning" and package["version"] == metadata.version("mopo-lightning")
    assert package["source"] in ("git", "metadata")
    assert list(record["libraries"]) == ["python", *prov.LIBRARIES]
    assert record["libraries"]["torch"] == metadata.version("torch")
    assert record["device"] == {"accelerator": "cpu", "name": prov.cpu_name(),
                                "threads": {"dynamics": 2, "rollout": 2, "sac": 1}, "cpus": available_cpus()}
    json.dumps(record, allow_nan=False)  # strict JSON
    assert prov.version_of("no-such-distribution-here") is None  # a library not installed: null


@needs_git
def test_git_gives_the_commit_and_whether_the_tree_is_dirty(tmp_path):
    package = tmp_path / "repo" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    _git(tmp_path / "repo", "init", "-q")
    _git(tmp_path / "repo", "add", ".")
    _git(tmp_path / "repo", "commit", "-qm", "first")
    head = _git(tmp_path / "repo", "rev-parse", "HEAD")
    assert prov.from_git(package) == {"commit": head, "dirty": False, "source": "git"}
    (package / "__init__.py").write_text("x = 1\n")
    assert prov.from_git(package) == {"commit": head, "dirty": True, "source": "git"}
    # a package directory git does not track (a wheel unpacked inside some repository) is not that repository's
    untracked = tmp_path / "repo" / "site" / "pkg"
    untracked.mkdir(parents=True)
    (untracked / "__init__.py").write_text("")
    assert prov.from_git(untracked) is None
    outside = tmp_path / "plain"
    outside.mkdir()
    (outside / "__init__.py").write_text("")
    assert prov.from_git(outside) is None


def test_a_slow_or_missing_git_falls_back_to_the_installed_metadata(monkeypatch, tmp_path):
    def timeout(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], prov.GIT_TIMEOUT_S)

    monkeypatch.setattr(prov.subprocess, "run", timeout)
    assert prov.from_git(Path(prov.__file__).parent) is None
    # a wheel installed from a VCS URL: pip records the commit in direct_url.json
    info = tmp_path / "fake_pkg-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-pkg\nVersion: 1.2\n")
    (info / "direct_url.json").write_text(json.dumps({"url": "https://x/y.git",
                                                      "vcs_info": {"vcs": "git", "commit_id": "ab" * 20}}))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert prov.from_metadata("fake-pkg") == {"commit": "ab" * 20, "dirty": None, "source": "metadata"}
    (info / "direct_url.json").unlink()  # a plain wheel: no commit known
    assert prov.from_metadata("fake-pkg") == {"commit": None, "dirty": None, "source": "metadata"}
    prov.package_record.cache_clear()
    try:
        assert prov.package_record()["source"] == "metadata"
    finally:
        prov.package_record.cache_clear()


def test_the_package_is_read_once_per_process(monkeypatch):
    calls = []
    real = prov._git
    monkeypatch.setattr(prov, "_git", lambda *a, **k: calls.append(a) or real(*a, **k))
    prov.package_record.cache_clear()
    try:
        first = prov.package_record()
        assert prov.package_record() == first and len(calls) <= 3
        assert prov.provenance({"sac": 1}, "cpu")["package"] == first and len(calls) <= 3
    finally:
        prov.package_record.cache_clear()


@needs_git
def test_this_checkout_reports_its_own_commit():
    source = Path(prov.__file__).resolve().parent
    if subprocess.run(["git", "ls-files", "--error-unmatch", "__init__.py"], cwd=source, capture_output=True,
                      check=False).returncode != 0:
        pytest.skip("the package is not a git checkout here")
    head = _git(source, "rev-parse", "HEAD")
    assert prov.from_git()["commit"] == head


def test_auto_accelerator_resolves_as_lightning_does(monkeypatch):
    import torch

    assert prov.accelerator_kind("gpu") == "cuda" and prov.accelerator_kind("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    if hasattr(torch.backends, "mps"):
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert prov.accelerator_kind("auto") == prov.accelerator_kind(None) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert prov.accelerator_kind("auto") == "cuda"
