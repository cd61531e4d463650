"""MedMNIST files that fetch themselves: the official URL and MD5 from the ``medmnist`` package's own
table, downloaded once, on the driver, checked, and written atomically into the data root.

The URL and MD5 are never copied into medtune: ``medmnist.info.INFO[flag]`` holds them for every size
(``url`` / ``MD5`` for 28 px, ``url_64`` / ``MD5_64`` and so on), so a new MedMNIST release is a
``pip install -U medmnist`` away. The download runs where the data set is loaded (the driver, before
Ray starts), never in a trial, so a search on a cluster fetches a file once, not once per node.

- ``MEDTUNE_OFFLINE=1`` turns downloads off (the tests do; a cluster without internet may).
- ``MEDTUNE_MEDMNIST_MIRROR=http://host:port[/prefix]`` replaces the official URL's scheme and host
  (the path, hence the file name, and the MD5 stay the official ones): a local mirror, or the tests'
  HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from medmnist.info import INFO

from tuner.errors import ConfigError

OFFLINE_ENV = "MEDTUNE_OFFLINE"
MIRROR_ENV = "MEDTUNE_MEDMNIST_MIRROR"
DATA_ROOT_ENV = "MEDTUNE_DATA_ROOT"
TIMEOUT_S = 60.0  # per socket operation: a dead network fails in a minute, not never
CHUNK = 1 << 20


@dataclass(frozen=True)
class OfficialFile:
    """Where MedMNIST publishes one data set at one size, and the MD5 it publishes with it."""

    name: str  # the medtune name: ``breastmnist``, ``breastmnist_128``
    file_name: str  # the official file name, from the URL: ``breastmnist_128.npz``
    url: str
    md5: str


def official_file(name: str) -> OfficialFile | None:
    """The official file of a MedMNIST name (``breastmnist``, ``breastmnist_64``; ``_28`` is the plain
    file), from ``medmnist.info.INFO``; None for a name that table does not have."""
    flag, _, size = name.partition("_")
    suffix = "" if size in ("", "28") else f"_{size}"
    entry = INFO.get(flag, {})
    url, md5 = entry.get(f"url{suffix}"), entry.get(f"MD5{suffix}")
    if not url or not md5:
        return None
    return OfficialFile(name=name, file_name=Path(urllib.parse.urlsplit(url).path).name, url=url, md5=md5)


def source_url(official: OfficialFile) -> str:
    """The URL to fetch from: the official one, or with ``$MEDTUNE_MEDMNIST_MIRROR``'s scheme and host
    (and path prefix) in place of MedMNIST's, the official path and query kept."""
    mirror = os.environ.get(MIRROR_ENV)
    if not mirror:
        return official.url
    base = urllib.parse.urlsplit(mirror)
    if base.scheme not in ("http", "https") or not base.netloc:
        raise ConfigError(f"${MIRROR_ENV}={mirror!r} is not an http(s) URL base; give scheme and host, e.g. "
                          "http://127.0.0.1:8000 (the official path and file name are appended).")
    path = urllib.parse.urlsplit(official.url)
    return urllib.parse.urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + path.path, path.query, ""))


def file_md5(path: Path) -> str:
    """The MD5 of a file, read in chunks (MedMNIST publishes MD5s, so that is the digest to compare)."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def where_to_put(official: OfficialFile, root: Path) -> str:
    """What a user does by hand when medtune cannot fetch a file: which file, from where, with which
    MD5, into which folder (a sentence that ends a ``ConfigError``)."""
    return (f"Fix: put the official {official.file_name} ({official.url}, MD5 {official.md5}) into {root}, or point "
            f"--data-root or ${DATA_ROOT_ENV} at the folder that holds it.")


def fetch(official: OfficialFile, root: Path) -> Path:
    """Download ``official`` into ``root`` once: streamed to a temporary file beside the target, its
    MD5 compared with the official one, then moved into place with ``os.replace`` (atomic), so the
    data root never holds a partial or wrong file, whatever interrupts the download. Offline
    (``$MEDTUNE_OFFLINE``), unreachable, or a mismatch: a ``ConfigError`` that says what to put where."""
    target = root / official.file_name
    if os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        raise ConfigError(f"MedMNIST file not found: {target}, and downloads are off (${OFFLINE_ENV}). "
                          + where_to_put(official, root))
    url = source_url(official)
    try:
        root.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=root, prefix=f".{official.file_name}.", suffix=".part")
    except OSError as error:
        raise ConfigError(f"MedMNIST file not found: {target}, and the data root {root} is not writable ({error}). "
                          + where_to_put(official, root)) from error
    print(f"medtune: downloading {official.file_name} from {url} into {root}", file=sys.stderr, flush=True)
    try:
        digest, received, expected = _download(url, handle)
        if expected is not None and received != expected:
            raise ConfigError(f"the download of {official.file_name} from {url} ended after {received} of {expected} "
                              "bytes, so it was not kept; run again to retry. " + where_to_put(official, root))
        if digest != official.md5:
            raise ConfigError(f"the downloaded {official.file_name} has MD5 {digest}, not the official {official.md5} "
                              f"(from {url}), so it was not kept; run again to retry. " + where_to_put(official, root))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide the file from a shared root's other users
        os.replace(temporary, target)
    except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
        raise ConfigError(f"MedMNIST file not found: {target}, and downloading it from {url} failed ({error}). "
                          + where_to_put(official, root)) from error
    finally:
        Path(temporary).unlink(missing_ok=True)
    return target


def _download(url: str, handle: int) -> tuple[str, int, int | None]:
    """Stream ``url`` into the open file ``handle`` (closed on return): the MD5 of what arrived, its
    size, and the size the server announced (a connection that drops early just ends the stream)."""
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310
        length = response.headers.get("Content-Length")
        for chunk in iter(lambda: response.read(CHUNK), b""):
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
    return digest.hexdigest(), received, int(length) if length and length.isdigit() else None
