"""medtune: hyperparameter search for transfer learning in medical image classification."""

from importlib.metadata import PackageNotFoundError, version

# Read from the installed package's metadata, so that the version is declared once (pyproject.toml).
try:
    __version__ = version("medtune")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
