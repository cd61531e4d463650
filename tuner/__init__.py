"""medtune: hyperparameter search for transfer learning in medical image classification."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medtune")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
