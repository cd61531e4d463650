"""Stopping a search on Ctrl-C or SIGTERM, so that ``--resume`` can finish it.

The first SIGINT or SIGTERM of the driver asks Ray Tune to stop the way its own Ctrl-C handler does
(through the SIGUSR1 handler Tune installs while it runs): no new trial starts, the running trials are
stopped, and the experiment state is saved, so that ``--resume`` re-runs no finished trial and
continues the stopped ones from their last checkpoint. The search then ends with ``SearchInterrupted``,
whose message gives the exact command that resumes it. A second signal exits at once
(``KeyboardInterrupt``, then ``SearchInterrupted(forced=True)``). Once the CLI has the search's
``SearchInterrupted``, any further signal ends the process at once (``exit_at_once_on_another_signal``),
wherever its exit has got to.
SIGTERM is treated like Ctrl-C because it is what a scheduler (Slurm, Kubernetes, ``docker stop``)
sends before it kills.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType


class SearchInterrupted(Exception):
    """The search was stopped by a signal; what was saved resumes with ``--resume``. ``forced``: a
    second signal, which exits without waiting for the trials to stop or the state to be saved."""

    def __init__(self, experiment: str, experiment_dir: Path, signum: int, forced: bool = False) -> None:
        self.experiment = experiment
        self.experiment_dir = experiment_dir
        self.signum = signum
        self.forced = forced
        super().__init__(f"search {experiment!r} interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports a process a signal ended (130 for Ctrl-C)."""
        return 128 + self.signum

    def advice(self, resume: str) -> str:
        """What happened and what to type next (``resume``: the command that resumes the search)."""
        name = signal.Signals(self.signum).name
        if self.forced:
            done = (f"{name} again: exited without waiting for the trials to stop. The search's state saved "
                    "last resumes (trials that were running re-run from their last checkpoint)")
        else:
            done = (f"{name}: the search stopped cleanly. Finished trials are kept and will not run again; "
                    "stopped trials continue from their last checkpoint")
        return f"medtune: {done}. Results so far in {self.experiment_dir}.\nResume with:\n  {resume}"


@dataclass
class StopRequest:
    """The signal that asked the search to stop (None: none did)."""

    signum: int | None = None


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """SIGINT and SIGTERM stop Tune gracefully while the context is open (see the module); the
    previous handlers come back when it closes. Only in the main thread, where signals are delivered."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
    previous = {number: signal.getsignal(number) for number in signals}
    tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"  # SIGINT is ours; Tune still installs its SIGUSR1 handler

    def stop(signum: int, frame: FrameType | None) -> None:
        if request.signum is not None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            raise KeyboardInterrupt(signal.Signals(signum).name)
        request.signum = signum
        tune_stop = signal.getsignal(signal.SIGUSR1)
        if not callable(tune_stop):  # Tune is not running (yet): nothing to stop gracefully
            raise KeyboardInterrupt(signal.Signals(signum).name)
        print(f"medtune: {signal.Signals(signum).name} received: stopping the trials and saving the search's "
              "state (a few seconds). Press Ctrl-C again to exit at once.", file=sys.stderr, flush=True)
        tune_stop(signum, frame)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        yield request
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if tune_handler is None:
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_handler


def exit_at_once_on_another_signal() -> None:
    """From now on, SIGINT or SIGTERM ends the process at once, with 128 + the signal's number: for a
    process that is ending after a stopped search (the CLI, once it holds the ``SearchInterrupted``),
    whose state is saved. Python's default handler would raise ``KeyboardInterrupt`` wherever the exit
    has got to, e.g. inside Ray's ``atexit`` shutdown, which it leaves half done: the process then died
    of SIGSEGV instead of exiting."""

    def exit_now(signum: int, frame: FrameType | None) -> None:
        print(f"medtune: {signal.Signals(signum).name} again: exiting at once. The search's state was saved; "
              "--resume continues it.", file=sys.stderr, flush=True)
        os._exit(128 + signum)

    signal.signal(signal.SIGINT, exit_now)
    signal.signal(signal.SIGTERM, exit_now)


def resume_command(argv: list[str], experiment: str) -> str:
    """The ``medtune`` command line that resumes ``experiment``: the arguments as given (``argv``, from
    the subcommand on), with ``--experiment`` set to the search's name (it may have been generated) and
    ``--resume`` added."""
    kept: list[str] = []
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if word == "--experiment":
            skip = True
            continue
        if word.startswith("--experiment=") or word == "--resume":
            continue
        kept.append(word)
    return "medtune " + shlex.join([*kept, "--experiment", experiment, "--resume"])
