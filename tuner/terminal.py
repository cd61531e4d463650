"""What a person sees in the terminal while a command runs, at three levels (``--quiet``, default,
``--verbose``).

- default: a line at start (``say``: what runs, where its results go), a progress line with trials
  done / running / pruned and the best so far, one line per finished trial (``tuner.progress``), and
  the closing summary;
- ``--verbose``: Tune's own tables and trial reports, and every library's log on the terminal, as Ray
  prints them;
- ``--quiet``: the closing summary only.

Below ``--verbose``, what Ray, MLflow, Optuna and their helpers log (checkpoint and sync-threshold
warnings, database migrations, "a new study created") goes to the log file ``LOG_FILE`` in the command's
storage instead of the terminal (``terminal``). The level is the process's, like a logging level: the
command line sets it once for the command it runs, and every Tuner built meanwhile follows it.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

QUIET, DEFAULT, VERBOSE = "quiet", "default", "verbose"
LOG_FILE = "medtune.log"
# Ray Tune's choice of output engine: its newer one prints the experiment's table even at verbose=0.
TUNE_OUTPUT_ENV = "RAY_AIR_NEW_OUTPUT"
# Loggers that print to the terminal by themselves; below --verbose they write to the log file.
LIBRARY_LOGGERS = ("ray", "ray.data", "ray.tune", "ray.train", "mlflow", "optuna", "alembic", "huey",
                   "sqlalchemy.engine", "py.warnings")

_level = DEFAULT
_log_file: logging.Handler | None = None
_transient = False  # the last line said is on a TTY without its newline, to be rewritten
_last_line_at = 0.0  # when the last line was written (monotonic seconds)
# In a file or a pipe a transient line is kept only after this many quiet seconds: a log then shows that
# a long step is still running without a line per step.
PIPED_TRANSIENT_EVERY_S = 30.0


def add_verbosity_arguments(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` and ``--quiet`` (exclusive) as ``args.verbosity``; a command's parser calls this."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--verbose", dest="verbosity", action="store_const", const=VERBOSE, default=DEFAULT,
                       help="Tune's full trial tables and every library's log on the terminal")
    group.add_argument("--quiet", dest="verbosity", action="store_const", const=QUIET,
                       help="print only the closing summary")


def level() -> str:
    """The terminal level of the command running now: ``quiet``, ``default`` or ``verbose``."""
    return _level


def say(text: str, transient: bool = False) -> None:
    """A line for the person at the terminal (what runs, where results go), left out by ``--quiet``.
    A ``transient`` one (a step of many, e.g. a report's sections) is rewritten in place by the next
    line on a TTY; in a file or a pipe it is written only after ``PIPED_TRANSIENT_EVERY_S`` quiet seconds."""
    global _transient, _last_line_at
    if _level == QUIET:
        return
    now = time.monotonic()
    if transient and not sys.stdout.isatty() and now - _last_line_at < PIPED_TRANSIENT_EVERY_S:
        return
    _last_line_at = now
    clear = "\r\033[K" if _transient else ""
    _transient = transient and sys.stdout.isatty()
    sys.stdout.write(clear + text + ("" if _transient else "\n"))
    sys.stdout.flush()


@contextmanager
def terminal(verbosity: str, storage: str | Path | None) -> Iterator[None]:
    """Run a command at ``verbosity``: below ``verbose``, the libraries' loggers write to
    ``<storage>/medtune.log`` (appended; made on the first record) rather than the terminal. The
    libraries are imported first, because importing them installs their own handlers (and
    ``ray.init`` installs Ray's again: ``tuner.cluster`` calls ``reroute_library_logs`` after it).
    Everything is put back on exit (tests run several commands in one process)."""
    global _level, _log_file
    if verbosity not in (QUIET, DEFAULT, VERBOSE):
        raise ValueError(f"verbosity {verbosity!r}: use quiet, default or verbose")
    saved_level, saved_file, saved_last_resort, _level = _level, _log_file, logging.lastResort, verbosity
    saved_output = os.environ.get(TUNE_OUTPUT_ENV)
    if verbosity != VERBOSE:  # Tune's older output engine is silent at verbose=0; the new one is not quite
        os.environ[TUNE_OUTPUT_ENV] = "0"
    saved = [(logging.getLogger(name), list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
             for name in LIBRARY_LOGGERS]
    if verbosity != VERBOSE and storage is not None:
        import mlflow  # noqa: F401  (importing each installs its terminal handlers)
        import optuna
        import ray  # noqa: F401

        optuna.logging.get_logger("optuna")  # Optuna adds its handler on first use
        _log_file = _LogFile(Path(storage).expanduser().resolve() / LOG_FILE)
        _log_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.captureWarnings(True)
        # ray.init clears the "ray" logger's handlers: what it logs meanwhile finds none, and would
        # go to logging's last resort, the terminal.
        logging.lastResort = _log_file
        reroute_library_logs()
    try:
        yield
    finally:
        if _log_file is not saved_file and _log_file is not None:
            logging.captureWarnings(False)
            logging.lastResort = saved_last_resort
            _log_file.close()
        _level, _log_file = saved_level, saved_file
        if saved_output is None:
            os.environ.pop(TUNE_OUTPUT_ENV, None)
        else:
            os.environ[TUNE_OUTPUT_ENV] = saved_output
        for logger, handlers, propagate in saved:
            logger.handlers, logger.propagate = handlers, propagate


def reroute_library_logs() -> None:
    """Send the libraries' loggers to the command's log file, not the terminal (when ``terminal``
    opened one); again after a library reinstalled its handlers."""
    if _log_file is None:
        return
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [h for h in logger.handlers if not _is_terminal_handler(h) and h is not _log_file]
        logger.addHandler(_log_file)
        logger.propagate = False


class _LogFile(logging.FileHandler):
    """The log file, appended to, and it and its folder made only when a first record comes: a
    command refused for bad input leaves no folder behind."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True)

    def _open(self):  # type: ignore[no-untyped-def]
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


def _is_terminal_handler(handler: logging.Handler) -> bool:
    """A handler writing to a stream that is not a file: the terminal, whatever its class (Ray and
    MLflow have their own)."""
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def tune_verbosity() -> int:
    """``tune.RunConfig(verbose=...)``: Tune's tables at ``--verbose`` (2), silent otherwise (0): the
    default level's progress is ``TrialProgress``'s."""
    return 2 if _level == VERBOSE else 0


