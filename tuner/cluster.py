"""Ray start-up for every command that runs trials (``medtune tune``, ``medtune pretrain --search``):
join the cluster ``$RAY_ADDRESS`` names, else start Ray on this machine, and check that some node can
hold one trial before any trial is queued."""

from __future__ import annotations

import os
import socket

from tuner.errors import ConfigError
from tuner.terminal import VERBOSE, level, reroute_library_logs


def init_ray(cpus_per_trial: float, gpus_per_trial: float) -> None:
    """Join the cluster named by $RAY_ADDRESS, else start Ray on this machine (an already started Ray
    is used as it is); then check that some node can hold a trial asking for these resources, since
    Tune would otherwise wait for one forever."""
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        if address:
            check_ray_address(address)
        try:
            # Below --verbose, the trials' own output (checkpoint notices) stays in Ray's worker logs.
            ray.init(address=address or None, include_dashboard=False, log_to_driver=level() == VERBOSE,
                     configure_logging=False)
            reroute_library_logs()  # ray.init installs Ray's terminal handler again
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise ConfigError(f"cannot connect to the Ray cluster at RAY_ADDRESS={address!r} ({error}). "
                              "Start it, fix RAY_ADDRESS, or unset it to run locally.") from error
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if not any(n.get("CPU", 0) >= cpus_per_trial and n.get("GPU", 0) >= gpus_per_trial for n in nodes):
        biggest = max(((n.get("CPU", 0), n.get("GPU", 0)) for n in nodes), default=(0, 0))
        raise ConfigError(f"no node can run a trial asking for {cpus_per_trial} CPU and {gpus_per_trial} GPU; "
                          f"the largest node has {biggest[0]:g} CPU and {biggest[1]:g} GPU. Lower --cpus-per-trial "
                          "/ --gpus-per-trial.")


def check_ray_address(address: str, timeout_s: float = 5.0) -> None:
    """A cluster address that does not answer fails in seconds; ray.init would retry for minutes."""
    if address in ("auto", "local"):
        return
    host_port = address.split("://", 1)[-1].rstrip("/")
    host, _, port = host_port.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as error:
        raise ConfigError(f"RAY_ADDRESS={address!r} does not answer ({error}). Start the cluster, fix RAY_ADDRESS "
                          "(host:port of the head's GCS, e.g. 10.0.0.5:6379), or unset it to run locally.") from error
