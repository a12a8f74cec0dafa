"""Locating and downloading D4RL files, without the internet: file:// URLs and a local HTTP server."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from mopo_lightning.data import d4rl_download
from mopo_lightning.data.d4rl import load_dataset
from mopo_lightning.data.d4rl_download import dataset_url, download_file, resolve_dataset
from mopo_lightning.data.errors import DatasetDownloadError, DatasetError


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_download_file_url_renames_into_place(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 5000)
    dest = tmp_path / "cache" / "walker2d_medium_replay-v2.hdf5"
    assert download_file(src.as_uri(), dest, quiet=True) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert leftovers(dest.parent) == []


def test_download_error_names_url_target_and_alternative(tmp_path):
    dest = tmp_path / "hopper_medium-v2.hdf5"
    for url in ((tmp_path / "nope.hdf5").as_uri(), "http://127.0.0.1:9/hopper_medium-v2.hdf5"):
        with pytest.raises(DatasetDownloadError) as info:
            download_file(url, dest, quiet=True, timeout=5)
        message = str(info.value)
        assert url in message and str(dest) in message and "--data.path FILE" in message
        assert info.value.__cause__ is None and info.value.__suppress_context__  # one message, no chain
        assert isinstance(info.value, ValueError)
        assert not dest.exists() and leftovers(tmp_path) == []


class _CutHandler(http.server.BaseHTTPRequestHandler):
    """Announces 100,000 bytes, sends 40,000 and hangs up."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        self.wfile.write(b"x" * 40_000)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args) -> None:
        pass


def test_cut_transfer_leaves_nothing_in_place(tmp_path):
    server = http.server.HTTPServer(("127.0.0.1", 0), _CutHandler)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_port}/hopper_medium-v2.hdf5"
    dest = tmp_path / "hopper_medium-v2.hdf5"
    try:
        with pytest.raises(DatasetDownloadError, match="could not download") as info:
            download_file(url, dest, quiet=True, timeout=10)
    finally:
        thread.join(10)
        server.server_close()
    assert url in str(info.value)
    assert not dest.exists() and leftovers(tmp_path) == []


def test_dataset_urls():
    base = "http://rail.eecs.berkeley.edu/datasets/offline_rl"
    assert dataset_url("walker2d-medium-replay-v2") == f"{base}/gym_mujoco_v2/walker2d_medium_replay-v2.hdf5"
    assert dataset_url("Hopper-Medium-Expert-v2") == f"{base}/gym_mujoco_v2/hopper_medium_expert-v2.hdf5"
    assert (
        dataset_url("halfcheetah-random-v0") == f"{base}/gym_mujoco/halfcheetah_random.hdf5"
    )  # D4RL's v0 names follow no pattern
    with pytest.raises(DatasetError, match="not a known D4RL dataset name"):
        dataset_url("pong-v5")


def test_resolve_explicit_path(tmp_path, hopper_flags):
    assert resolve_dataset(hopper_flags) == hopper_flags
    assert resolve_dataset(str(hopper_flags), download=False) == hopper_flags
    with pytest.raises(DatasetError, match="no such file"):
        resolve_dataset(tmp_path / "missing.hdf5")


def test_resolve_name_in_cache_dir(tmp_path, monkeypatch):
    cached = tmp_path / "walker2d_medium_replay-v2.hdf5"
    cached.write_bytes(b"")
    assert resolve_dataset("walker2d-medium-replay-v2", data_dir=tmp_path) == cached
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path))
    assert resolve_dataset("walker2d-medium-replay-v2") == cached


def test_resolve_without_download(tmp_path):
    with pytest.raises(DatasetDownloadError) as info:
        resolve_dataset("hopper-medium-v2", data_dir=tmp_path, download=False)
    message = str(info.value)
    assert dataset_url("hopper-medium-v2") in message
    assert str(tmp_path / "hopper_medium-v2.hdf5") in message and "--data.path FILE" in message


def test_resolve_downloads_missing_file(tmp_path, monkeypatch, hopper_flags):
    """A missing D4RL name is fetched into the cache under its standard file name, then loads."""
    monkeypatch.setattr(d4rl_download, "dataset_url", lambda name: hopper_flags.as_uri())
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "d4rl"))
    path = resolve_dataset("hopper-medium-v2")
    assert path == tmp_path / "d4rl" / hopper_flags.name
    assert path.read_bytes() == hopper_flags.read_bytes()
    assert load_dataset(path, "hopper").batch_size[0] == 1000
