"""Data that fetches itself: a MedMNIST name missing from the data root is downloaded from a real HTTP
server on 127.0.0.1 (standing in for MedMNIST's, through ``$MEDTUNE_MEDMNIST_MIRROR``: the path, file name
and MD5 stay those of the ``medmnist`` package's table), MD5-checked and written atomically; a corrupted
or truncated copy is refused and leaves nothing in the data root; offline, the message says what to put
where. ``medtune data list`` / ``fetch`` show and fetch what the root holds. Every other test runs with
``$MEDTUNE_OFFLINE`` (conftest), so only these download, and only from 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import urllib.parse
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from medmnist.info import INFO

from tuner.cli import main
from tuner.data import load_dataset
from tuner.errors import ConfigError

SHARED = Path(os.environ["MEDTUNE_DATA_ROOT"]) / "breastmnist.npz"
OFFICIAL_MD5 = "750601b1f35ba3300ea97c75c52ff8f6"  # the shared file is MedMNIST's own


class _Mirror(ThreadingHTTPServer):
    """Serves the files of ``folder`` by their name, whatever the path before it, and records each
    request's path; ``truncate`` sends half of a file under the full Content-Length, then hangs up."""

    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.folder, self.requests, self.truncate = folder, [], False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        server: _Mirror = self.server  # type: ignore[assignment]
        server.requests.append(self.path)
        path = server.folder / Path(urllib.parse.urlsplit(self.path).path).name
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if server.truncate else body)

    def log_message(self, *args) -> None:
        """Quiet: the test asserts on ``requests`` instead."""


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(SHARED, served / "breastmnist.npz")
    server = _Mirror(served)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("MEDTUNE_OFFLINE", raising=False)
    monkeypatch.setenv("MEDTUNE_MEDMNIST_MIRROR", server.base)
    yield server
    server.shutdown()
    server.server_close()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def test_a_missing_file_is_downloaded_once_checked_and_loaded(mirror, tmp_path):
    root = tmp_path / "root"  # does not exist yet: made on the way
    data = load_dataset("breastmnist", data_root=root)
    assert (len(data.train), len(data.val), len(data.test)) == (546, 78, 156)
    assert os.listdir(root) == ["breastmnist.npz"]  # no partial download left beside it
    assert _md5(root / "breastmnist.npz") == OFFICIAL_MD5 == INFO["breastmnist"]["MD5"]
    official = urllib.parse.urlsplit(INFO["breastmnist"]["url"])
    assert mirror.requests == [f"{official.path}?{official.query}"]  # the official path, on the mirror
    load_dataset("breastmnist", data_root=root)
    assert len(mirror.requests) == 1  # downloaded once: the second load finds the file


def test_a_corrupted_copy_is_refused_and_not_kept(mirror, tmp_path):
    corrupt = bytearray(SHARED.read_bytes())
    corrupt[1000] ^= 0xFF
    (mirror.folder / "breastmnist.npz").write_bytes(bytes(corrupt))
    root = tmp_path / "root"
    with pytest.raises(ConfigError) as error:
        load_dataset("breastmnist", data_root=root)
    message = str(error.value)
    assert f"not the official {OFFICIAL_MD5}" in message and "it was not kept" in message
    assert hashlib.md5(bytes(corrupt), usedforsecurity=False).hexdigest() in message
    assert os.listdir(root) == []


def test_a_truncated_transfer_is_refused_and_not_kept(mirror, tmp_path):
    mirror.truncate = True
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match="the download of breastmnist.npz from http://127.0.0.1:.* ended after "
                                          "279790 of 559580 bytes, so it was not kept"):
        load_dataset("breastmnist", data_root=root)
    assert os.listdir(root) == []


def test_a_size_variant_takes_its_file_name_and_md5_from_medmnists_table(mirror, tmp_path):
    """``breastmnist_128``: the mirror is asked for the official 128-px path and the file checked
    against the official 128-px MD5, so serving the 28-px file under that name is refused."""
    shutil.copy(SHARED, mirror.folder / "breastmnist_128.npz")
    with pytest.raises(ConfigError, match=f"not the official {INFO['breastmnist']['MD5_128']}"):
        load_dataset("breastmnist_128", data_root=tmp_path / "root")
    assert urllib.parse.urlsplit(mirror.requests[0]).path == urllib.parse.urlsplit(
        INFO["breastmnist"]["url_128"]).path


def test_offline_says_what_to_put_where(mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDTUNE_OFFLINE", "1")
    root = tmp_path / "root"
    with pytest.raises(ConfigError) as error:
        load_dataset("breastmnist_64", data_root=root)
    message = str(error.value)
    for part in ("breastmnist_64.npz", INFO["breastmnist"]["url_64"], INFO["breastmnist"]["MD5_64"], str(root),
                 "$MEDTUNE_DATA_ROOT", "--data-root"):
        assert part in message
    assert mirror.requests == []


def test_an_unreachable_server_says_what_to_put_where(mirror, tmp_path, monkeypatch):
    port = mirror.server_address[1]
    mirror.shutdown()
    mirror.server_close()  # nothing listens on the port now
    with pytest.raises(ConfigError, match=f"downloading it from http://127.0.0.1:{port}/.* failed .*Fix: put the "
                                          f"official breastmnist.npz .*MD5 {OFFICIAL_MD5}"):
        load_dataset("breastmnist", data_root=tmp_path / "root")


def test_data_list_shows_sizes_and_md5_status_and_fetch_fetches(mirror, tmp_path, capsys):
    root = tmp_path / "root"
    assert main(["data", "fetch", "breastmnist", "--data-root", str(root)]) == 0
    assert f"{root / 'breastmnist.npz'} (MD5 ok)" in capsys.readouterr().out
    shutil.copy(SHARED, root / "mine.npz")  # a user's own file: no official MD5 to compare
    shutil.copy(SHARED, root / "pneumoniamnist.npz")  # the wrong content under an official name
    assert main(["data", "list", "--data-root", str(root)]) == 1  # a mismatch is a failed check
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert lines["breastmnist.npz"].split()[1:] == ["546.5", "KB", "MD5", OFFICIAL_MD5, "ok"]
    assert lines["mine.npz"].endswith("own file")
    assert lines["pneumoniamnist.npz"].endswith(f"MISMATCH (official {INFO['pneumoniamnist']['MD5']})")
    assert main(["data", "fetch", "pneumoniamnist", "--data-root", str(root)]) == 2  # refused, not replaced
    assert "is present but its MD5 is not the official" in capsys.readouterr().err
    assert len(mirror.requests) == 1
