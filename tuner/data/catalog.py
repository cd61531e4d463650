"""``medtune data``: what the data root holds (``list``: files, sizes, MD5 against MedMNIST's official
ones) and fetching official files ahead of a search (``fetch``), e.g. on a cluster's head node."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from tuner.data.download import fetch, file_md5, official_file
from tuner.data.medmnist import is_medmnist_name, known_names, medmnist_path, resolve_data_root
from tuner.errors import ConfigError


@dataclass(frozen=True)
class DataFile:
    """One ``.npz`` in the data root: its size and whether its MD5 is MedMNIST's official one."""

    path: Path
    size: int  # bytes
    md5: str
    official_md5: str | None  # None: not an official MedMNIST file name (a user's own .npz)

    @property
    def status(self) -> str:
        """``ok``, ``MISMATCH`` (a corrupt or altered official file), or ``own file`` (no official MD5)."""
        if self.official_md5 is None:
            return "own file"
        return "ok" if self.md5 == self.official_md5 else "MISMATCH"


def list_data_root(root: Path) -> list[DataFile]:
    """Every ``.npz`` in ``root`` (partial downloads, hidden, are not), with its MD5 checked against the
    official one where the file name is a MedMNIST name's (each file is read once, to hash it)."""
    if not root.is_dir():
        return []
    files = []
    for path in sorted(root.glob("*.npz")):
        official = official_file(path.stem) if is_medmnist_name(path.stem) else None
        files.append(DataFile(path=path, size=path.stat().st_size, md5=file_md5(path),
                              official_md5=official.md5 if official else None))
    return files


def fetch_names(names: list[str], root: Path) -> list[Path]:
    """The file of each MedMNIST name in ``root``, downloaded (and checked) where it is missing; an
    existing file whose MD5 is not the official one is refused, not silently replaced."""
    paths = []
    for name in names:
        official = official_file(name) if is_medmnist_name(name) else None
        if official is None:
            raise ConfigError(f"{name!r} is not a MedMNIST name with an official file. Known: "
                              f"{', '.join(known_names())}, optionally with a size suffix (_64, _128, _224).")
        path = medmnist_path(name, root)
        if not path.is_file():
            path = fetch(official, root)
        elif file_md5(path) != official.md5:
            raise ConfigError(f"{path} is present but its MD5 is not the official {official.md5}: it is corrupt or "
                              "altered. Delete it and run `medtune data fetch` again.")
        paths.append(path)
    return paths


def data_command(args: argparse.Namespace) -> int:
    """Run ``medtune data list`` or ``fetch``; exit status 1 when a listed file fails its MD5 check."""
    root = resolve_data_root(args.data_root)
    if args.data_command == "fetch":
        for path in fetch_names(args.names, root):
            print(f"medtune: {path} (MD5 ok)")
        return 0
    files = list_data_root(root)
    print(f"data root: {root}" + ("" if root.is_dir() else " (does not exist yet)"))
    width = max((len(f.path.name) for f in files), default=0)
    for item in files:
        expected = f" (official {item.official_md5})" if item.status == "MISMATCH" else ""
        print(f"  {item.path.name:<{width}}  {_size(item.size):>9}  MD5 {item.md5}  {item.status}{expected}")
    print(f"{len(files)} file(s). A MedMNIST name not here (e.g. pneumoniamnist_64) is downloaded on first use "
          "from MedMNIST's official URL, or now with `medtune data fetch NAME`.")
    return 1 if any(f.status == "MISMATCH" for f in files) else 0


def _size(size: int) -> str:
    value, unit = float(size), "B"
    for unit in ("B", "KB", "MB", "GB"):  # noqa: B007 (the unit it stops at is the one printed)
        if value < 1024 or unit == "GB":
            break
        value /= 1024
    return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
